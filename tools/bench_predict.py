"""Whole-volume inference, store in to labels and confidence out, in voxels/s: srjax's
``predict_volume`` against the same net in PyTorch labelling slice by slice, and the
read / compute / write split of srjax's, measured in the same run.

  python tools/bench_predict.py                          # a 1200x1520x1520 uint16 scan (5.5 GB on disk)
  python tools/bench_predict.py --shape 64,512,512 --width cpu

The scan is random uint16 voxels in an OME-Zarr of 1-slice chunks in a temporary
directory (the net's weights are random too: the time does not depend on either).
srjax reads each slice once, reads the next batch while the device labels this one,
and writes labels and uint8 confidence asynchronously. The reference reads every
slice's stack of neighbours on its own, labels one slice at a time and writes it
before reading the next: the loop a script would be. The split times each part alone
over the whole volume: reading the stacks, the forward passes on a batch already in
memory, writing the outputs. Peak memory is the process's maximum resident set.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from srjax import io, train
from srjax.data import read_stack
from srjax.models import build_model
from srjax.predict import SliceWindow, compiled_forward, predict_volume


def write_scan(path: Path, shape, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with io.ome_zarr_writer(path, shape, np.uint16, name="benchmark scan") as writer:
        for start in range(0, shape[0], 16):
            stop = min(start + 16, shape[0])
            writer[start:stop] = rng.integers(0, 65536, (stop - start, *shape[1:]), dtype=np.uint16)


@contextlib.contextmanager
def outputs(directory: Path, shape):
    with io.ome_zarr_writer(directory / "labels.ome.zarr", shape, np.uint8, chunks=io.LABEL_CHUNKS) as labels, \
            io.ome_zarr_writer(directory / "confidence.ome.zarr", shape, np.uint8, chunks=io.LABEL_CHUNKS) as conf:
        yield labels, conf


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def srjax_times(model, params, volume, args, directory: Path) -> dict:
    mesh = train.make_mesh()
    depth = volume.shape[0]
    batch = -(-args.batch // mesh.devices.size) * mesh.devices.size
    batches = [list(range(s, min(s + batch, depth))) for s in range(0, depth, batch)]

    def end_to_end(name):
        with outputs(directory / name, volume.shape) as (labels, confidence):
            predict_volume(model, params, volume, 0.0, 65535.0, args.slices, args.batch, mesh, labels, confidence,
                           progress=False)

    end_to_end("warm-up")  # compiles the forward pass
    times = {"end to end": timed(lambda: end_to_end("run"))}
    window = SliceWindow(volume, 0.0, 65535.0, args.slices)
    times["read"] = timed(lambda: [window.stacks(zs) for zs in batches])
    forward = compiled_forward(model, mesh)
    stacks = np.zeros((batch, *volume.shape[1:], args.slices), np.float32)
    images = jax.make_array_from_process_local_data(train.batch_sharded(mesh), stacks)
    on_device = jax.device_put(params, train.replicated(mesh))
    times["compute"] = timed(lambda: [jax.device_get(forward(on_device, images)) for _ in batches])

    def write():
        zeros = np.zeros((batch, *volume.shape[1:]), np.uint8)
        with outputs(directory / "write", volume.shape) as (labels, confidence):
            for zs in batches:
                labels[zs[0]:zs[-1] + 1] = zeros[: len(zs)]
                confidence[zs[0]:zs[-1] + 1] = zeros[: len(zs)]

    times["write"] = timed(write)
    return times


def torch_time(widths, volume, args, directory: Path) -> float:
    import torch

    from torch_unet import UNetNoSkip

    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = UNetNoSkip(args.slices, args.classes, widths).to(device).eval()
    full = slice(None)

    def run():
        with outputs(directory / "torch", volume.shape) as (labels, confidence), torch.no_grad():
            for z in range(volume.shape[0]):
                stack = read_stack(volume, z, args.slices, full, full, 0.0, 65535.0)
                x = torch.from_numpy(np.moveaxis(stack, -1, 0)[None].copy()).to(device)
                probs = torch.softmax(net(x), dim=1)
                top, label = probs.max(dim=1)
                labels[z:z + 1] = label.to(torch.uint8).cpu().numpy()
                confidence[z:z + 1] = torch.round(top * io.CONFIDENCE_SCALE).to(torch.uint8).cpu().numpy()

    return timed(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="1200,1520,1520", help="Z,Y,X of the scan")
    parser.add_argument("--width", default="paper", help="the net's width preset (paper or cpu)")
    parser.add_argument("--slices", type=int, default=7)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8, help="slices per forward pass (srjax)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    model = build_model("unet_noskip", args.classes, args.width)
    params = jax.device_get(train.init_params(model, args.slices, 64, 0))
    voxels = float(np.prod(shape))
    with tempfile.TemporaryDirectory(prefix="srjax-bench-") as tmp:
        directory = Path(tmp)
        write_scan(directory / "scan.ome.zarr", shape)
        volume = io.open_volume(directory / "scan.ome.zarr")
        print(f"{shape[0]}x{shape[1]}x{shape[2]} uint16 scan, unet_noskip ({args.width} widths), {args.slices} slices, "
              f"batch {args.batch}; jax {jax.__version__} on {jax.device_count()} {jax.devices()[0].platform} device(s)")
        times = srjax_times(model, params, volume, args, directory)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"srjax end to end: {times['end to end']:.1f} s, {voxels / times['end to end'] / 1e6:.2f} M voxels/s; "
              f"peak memory {rss:.2f} GB")
        print("  alone over the volume: " + ", ".join(f"{part} {times[part]:.1f} s" for part in ("read", "compute",
                                                                                             "write")))
        if not args.no_torch:
            try:
                reference = torch_time(model.widths, volume, args, directory)
            except ImportError:
                print("PyTorch is not installed (pip install -e '.[bench]'): no reference to compare with")
                return
            print(f"pytorch slice by slice: {reference:.1f} s, {voxels / reference / 1e6:.2f} M voxels/s; "
                  f"srjax {reference / times['end to end']:.2f}x its throughput")


if __name__ == "__main__":
    main()
