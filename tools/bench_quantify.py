"""Benchmark `srjax quantify` against scipy.ndimage.label + skimage.measure.regionprops.

  python tools/bench_quantify.py                  # 128x512x512 (reference) and 1200x1520x1520 (memory)
  python tools/bench_quantify.py --big-depth 0    # the speed comparison only

A synthetic segmentation (four classes from thresholded smooth random fields: a matrix,
a second phase, pores, and small bright inclusions at ~2 %) is written as an OME-Zarr
label image. On a volume that fits in memory the reference labels each class with
scipy and measures every feature with regionprops (area, centroid, bbox, axis lengths,
equivalent diameter: what srjax's table holds); srjax quantifies the same classes from
the OME-Zarr, out of core, end to end (instance images, tables and figures written),
in a fresh process. It prints voxels per second of each, their ratio, and checks that
both found the same number of features. Then srjax quantifies a paper-sized label
volume (1200x1520x1520: its int32 component image alone would be 11 GB) and reports
the peak resident memory of its whole process tree, sampled every 0.1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from srjax import io

CLASSES = (1, 3)  # the pores (large and small, ~15 %) and the rare inclusions (~2 %)


def label_block(rng, shape) -> np.ndarray:
    """A [depth, side, side] segmentation: thresholded smooth random fields."""
    coarse = ndimage.gaussian_filter(rng.standard_normal(shape), 3.0)
    fine = ndimage.gaussian_filter(rng.standard_normal(shape), 1.2)
    labels = np.digitize(coarse, np.quantile(coarse, [0.5])).astype(np.uint8) * 2  # matrix 0, phase 2
    labels[coarse < np.quantile(coarse, 0.15)] = 1
    labels[fine > np.quantile(fine, 0.98)] = 3
    return labels


def build(path: Path, shape, seed: int = 0) -> None:
    """A label image of ``shape``, built from one 64-slice block tiled and shifted, slab by slab."""
    rng = np.random.default_rng(seed)
    block = label_block(rng, (64, min(shape[1], 512), min(shape[2], 512)))
    reps = (1, -(-shape[1] // block.shape[1]), -(-shape[2] // block.shape[2]))
    tiled = np.tile(block, reps)[:, : shape[1], : shape[2]]
    with io.ome_zarr_writer(path, shape, np.uint8, chunks=io.LABEL_CHUNKS, name="benchmark labels") as writer:
        for z in range(0, shape[0], 64):
            depth = min(64, shape[0] - z)
            writer[z : z + depth] = np.roll(tiled, z // 64 * 37, axis=2)[:depth]
    os.sync()  # the volume on disk before a clock starts: its write-back is not quantify's work


def reference(labels: np.ndarray) -> tuple[float, dict]:
    from skimage.measure import regionprops

    start = time.perf_counter()
    counts = {}
    for c in CLASSES:
        ids, count = ndimage.label(labels == c)
        for p in regionprops(ids):
            p.area, p.centroid, p.bbox, p.axis_major_length, p.axis_minor_length, p.equivalent_diameter_area
        counts[c] = count
    return time.perf_counter() - start, counts


def run_quantify(path: Path, out: Path) -> tuple[float, float, dict]:
    """Seconds, peak RSS (GB) of the process tree, and the summary of `srjax quantify`."""
    command = [sys.executable, "-m", "srjax.cli", "quantify", str(path), "--class", *map(str, CLASSES),
               "--out", str(out)]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_rss(process.pid))
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    if process.returncode:
        raise SystemExit(f"srjax quantify failed: {process.stderr.read()}")
    return seconds, peak / 2**30, json.loads((out / "summary.json").read_text())


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants (Linux /proc)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (OSError, StopIteration):
            continue
        todo += [int(child) for child in children]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=128)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--big-depth", type=int, default=1200, help="0: skip the memory run")
    parser.add_argument("--big-side", type=int, default=1520)
    parser.add_argument("--repeats", type=int, default=3, help="runs on the paper-sized volume (timings spread)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shape = (args.depth, args.side, args.side)
        build(tmp / "labels.ome.zarr", shape)
        labels = np.asarray(io.open_volume(tmp / "labels.ome.zarr").read().result())
        voxels = labels.size
        ref_seconds, ref_counts = reference(labels)
        seconds, peak, summary = run_quantify(tmp / "labels.ome.zarr", tmp / "q")
        counts = {s["class"]: s["count"] for s in summary["steps"]}
        fractions = ", ".join(f"class {c} {100 * np.mean(labels == c):.1f} %" for c in CLASSES)
        print(f"volume {shape} ({voxels / 1e6:.0f} M voxels; {fractions}), classes {CLASSES}")
        print(f"reference scipy.ndimage.label + regionprops: {ref_seconds:.2f} s, "
              f"{len(CLASSES) * voxels / ref_seconds / 1e6:.1f} M voxels/s (per class pass)")
        print(f"srjax quantify (out of core, fresh process, all outputs): {seconds:.2f} s, "
              f"{len(CLASSES) * voxels / seconds / 1e6:.1f} M voxels/s, peak RSS {peak:.2f} GB")
        print(f"ratio srjax / reference: {ref_seconds / seconds:.2f}x; same feature counts: {counts == ref_counts} "
              f"({counts})")
        if args.big_depth:
            big = (args.big_depth, args.big_side, args.big_side)
            build(tmp / "big.ome.zarr", big)
            total = int(np.prod(big))
            print(f"volume {big} ({total / 1e9:.2f} G voxels, {total / 2**30:.2f} GB as uint8, "
                  f"{4 * total / 2**30:.1f} GB as int32 components):")
            runs = []
            for repeat in range(args.repeats):
                seconds, peak, summary = run_quantify(tmp / "big.ome.zarr", tmp / f"big-q{repeat}")
                shutil.rmtree(tmp / f"big-q{repeat}")  # gigabytes of instance images and tables
                runs.append(seconds)
                print(f"  run {repeat + 1}: {seconds:.1f} s, {len(CLASSES) * total / seconds / 1e6:.1f} M voxels/s, "
                      f"peak RSS {peak:.2f} GB, features {[s['count'] for s in summary['steps']]}")
            median = float(np.median(runs))
            print(f"  median of {len(runs)}: {median:.1f} s, {len(CLASSES) * total / median / 1e6:.1f} M voxels/s")


if __name__ == "__main__":
    main()
