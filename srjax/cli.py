"""The ``srjax`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from srjax import config as cfg
from srjax.errors import SrjaxError

DEMO_SHAPE = (48, 160, 160)


def _shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N,H,W") from None
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not three positive sizes N,H,W")
    return shape


def _floats3(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not Z,Y,X") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not one or three positive sizes Z,Y,X")
    return values


def _classes(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer or 'auto'") from None


def _config(args, base: cfg.Config) -> cfg.Config:
    config = cfg.load(args.config, base) if getattr(args, "config", None) else base
    return cfg.apply_overrides(config, args.set or [])


def _write_phantom(spec, out: Path):
    from srjax import io
    from srjax.phantom import make_phantom

    volume, truth = make_phantom(spec, progress=True)
    out.mkdir(parents=True, exist_ok=True)
    for name, array in (("volume.ome.zarr", volume), ("truth.ome.zarr", truth)):
        io.write_volume(out / name, array, name=f"phantom {name.split('.')[0]}")
    return io.open_volume(out / "volume.ome.zarr"), io.open_volume(out / "truth.ome.zarr")


def _record_inputs(out: Path, volume, truth) -> None:
    """inputs.json: where the run's volume (as read) and truth are, for tools that revisit the run."""
    from srjax.pipeline import write_json

    paths = {"volume": volume, "truth": truth}
    write_json(out / "inputs.json", {key: str(Path(path).absolute()) if path else None for key, path in paths.items()})


def cmd_phantom(args) -> None:
    from srjax.phantom import PhantomSpec

    spec = PhantomSpec(shape=args.shape, seed=args.seed, fbp=args.fbp)
    _write_phantom(spec, Path(args.out))
    print(f"wrote {args.out}/volume.ome.zarr and {args.out}/truth.ome.zarr, shape {spec.shape}")


def cmd_demo(args) -> None:
    from srjax.phantom import PhantomSpec
    from srjax.pipeline import run_pipeline
    from srjax.report import score_table

    config = _config(args, cfg.demo_config())
    out = Path(args.out)
    volume, truth = _write_phantom(PhantomSpec(shape=args.shape, seed=config.seed), out / "phantom")
    _record_inputs(out, out / "phantom" / "volume.ome.zarr", out / "phantom" / "truth.ome.zarr")
    metrics = run_pipeline(volume, out, config, truth=truth, volume_name="phantom volume", truth_name="phantom truth")
    print(score_table(metrics))
    print(f"outputs in {out} (panel.png, metrics.json, labels.ome.zarr, confidence.ome.zarr)")


def cmd_run(args) -> None:
    from srjax import io
    from srjax.pipeline import check_config, run_pipeline
    from srjax.report import score_table
    from srjax.sources import as_store

    config = _config(args, cfg.Config())
    overrides = [f"pseudo.classes={args.classes}"]
    overrides += [f"pseudo.method={args.method}"] if args.method else []
    overrides += [f"pseudo.mask={args.mask}"] if args.mask else []
    config = cfg.apply_overrides(config, overrides)
    check_config(config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    volume_path = as_store(args.volume, out, "volume", "volume", args.dataset)
    volume = io.open_volume(volume_path, "volume")
    truth = None
    if args.truth:
        truth = io.open_volume(as_store(args.truth, out, "truth", "--truth", args.truth_dataset), "--truth")
    _record_inputs(out, volume_path, args.truth)
    size = io.voxel_size(volume_path)
    if args.voxel_size:
        size = (list(args.voxel_size), args.unit)
    metrics = run_pipeline(volume, out, config, truth=truth, volume_name=f"volume {args.volume}",
                           truth_name=f"--truth {args.truth}", voxel_size=size[0] if size else None,
                           unit=size[1] if size else None)
    if truth is not None:
        print(score_table(metrics))
    print(f"outputs in {args.out}")


def cmd_import(args) -> None:
    from srjax.sources import import_volume, open_source

    source = open_source(args.source, "source", args.dataset)
    import_volume(source, args.out, chunks=args.chunks, voxel_size=args.voxel_size, unit=args.unit)
    print(f"wrote {args.out}: shape {source.shape}, dtype {source.dtype}, chunks {args.chunks}")


def cmd_pseudo(args) -> None:
    import json

    from srjax.pseudo import write_pseudo_labels
    from srjax.sources import open_source

    source = open_source(args.volume, "volume", args.dataset)
    result = write_pseudo_labels(source, args.out, args.method, args.classes, args.mask, args.seed,
                                 progress=True, voxel_size=source.voxel_size, unit=source.unit)
    summary = result.summary()
    if result.curve:
        curve = result.curve
        values = curve.get("bic", curve.get("sse"))
        print(f"choosing K by the {curve['rule']}:")
        for k, value in zip(curve["k"], values):
            print(f"  K={k}: {value:.6g}{'   <- chosen' if k == curve['chosen'] else ''}")
    print(json.dumps({key: summary[key] for key in ("method", "classes", "means", "objective_name", "objective")}))
    print(f"wrote {args.out}")


def cmd_explain(args) -> None:
    import json

    import numpy as np

    from srjax import io
    from srjax.data import normalise, read_stack
    from srjax.explain import grad_cam
    from srjax.models import build_model
    from srjax.report import overlay
    from srjax.train import latest_params

    run = Path(args.run)
    if not (run / "config.json").exists() or not (run / "stage1.json").exists():
        raise SrjaxError(f"{run} is not an srjax run directory (no config.json and stage1.json)")
    config = cfg.load(run / "config.json")
    stage1 = json.loads((run / "stage1.json").read_text())
    if args.volume is None and not (run / "inputs.json").exists():
        raise SrjaxError(f"{run} does not say where its volume is (no inputs.json); pass --volume")
    volume = io.open_volume(args.volume or json.loads((run / "inputs.json").read_text())["volume"], "--volume")
    if not 0 <= args.slice < volume.shape[0]:
        raise SrjaxError(f"--slice {args.slice} is outside the volume's 0-{volume.shape[0] - 1}")
    params = latest_params(run / "checkpoints" / args.stage, "teacher" if args.stage == "stage3" else "params")
    model = build_model(config.model.name, stage1["classes"], config.model.width, config.model.dropout)
    full = slice(None)
    image = read_stack(volume, args.slice, config.data.slices, full, full, stage1["low"], stage1["high"])
    cam = grad_cam(model, params, image, args.cls, args.layer)
    layer = args.layer or model.cam_layer
    prefix = Path(args.out) if args.out else run / f"gradcam_{args.stage}_slice{args.slice}_class{args.cls}"
    with io.atomic_path(prefix.with_suffix(".npy")) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, cam.astype(np.float32))
    middle = normalise(io.read(volume[args.slice], "--volume"), stage1["low"], stage1["high"])
    overlay(prefix.with_suffix(".png"), middle, cam,
            f"Grad-CAM of class {args.cls} at {layer} ({config.model.name}, {args.stage}), slice {args.slice}")
    print(f"wrote {prefix.with_suffix('.png')} and {prefix.with_suffix('.npy')}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srjax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add_config_options(p):
        p.add_argument("--config", help="a .json or .toml config file")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config key, e.g. stage2.epochs=50 or model=unet (repeatable)")

    p = sub.add_parser("demo", help="make a phantom and run all three stages on it, CPU-sized")
    p.add_argument("--out", default="srjax-demo", help="output directory (default: srjax-demo)")
    p.add_argument("--shape", type=_shape, default=DEMO_SHAPE, help="phantom size N,H,W (default 48,160,160)")
    add_config_options(p)
    p.set_defaults(func=cmd_demo)

    volume_help = "Zarr/N5/OME-Zarr store, TIFF file or directory, HDF5 file, or .npy"
    p = sub.add_parser("run", help="segment a volume: pseudo labels, stage 2, stage 3")
    p.add_argument("volume", help=volume_help + " (anything but a store is imported into OUT first)")
    p.add_argument("--classes", type=_classes, required=True, help="number of classes K, or 'auto'")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--method", help="pseudo-label clusterer (default kmeans)")
    p.add_argument("--mask", help="cluster only inside 'circle' (the reconstruction circle) or a mask volume")
    p.add_argument("--truth", help="ground-truth label volume for scoring")
    p.add_argument("--dataset", help="HDF5 dataset of the volume (default /exchange/data)")
    p.add_argument("--truth-dataset", help="HDF5 dataset of --truth (default /exchange/data)")
    p.add_argument("--voxel-size", type=_floats3, help="Z,Y,X voxel size for the outputs' metadata")
    p.add_argument("--unit", default="micrometer", help="unit of --voxel-size (default micrometer)")
    add_config_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("import", help="convert a volume into a chunked, compressed OME-Zarr")
    p.add_argument("source", help=volume_help)
    p.add_argument("out", help="the OME-Zarr to write, e.g. scan.ome.zarr")
    p.add_argument("--dataset", help="HDF5 dataset (default /exchange/data)")
    p.add_argument("--chunks", type=_shape, default=(1, 512, 512), help="chunk shape Z,Y,X (default 1,512,512)")
    p.add_argument("--voxel-size", type=_floats3, help="Z,Y,X voxel size (default: the source's, if recorded)")
    p.add_argument("--unit", help="unit of --voxel-size, e.g. micrometer")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("pseudo", help="stage 1 alone: pseudo labels by clustering voxel values")
    p.add_argument("volume", help=volume_help)
    p.add_argument("--method", default="kmeans", help="kmeans | kmeans-lloyd | otsu | gmm | gmm-full")
    p.add_argument("--classes", type=_classes, required=True, help="number of classes K, or 'auto'")
    p.add_argument("--out", required=True, help="the OME-Zarr label volume to write")
    p.add_argument("--mask", help="cluster only inside 'circle' (the reconstruction circle) or a mask volume")
    p.add_argument("--dataset", help="HDF5 dataset (default /exchange/data)")
    p.add_argument("--seed", type=int, default=0, help="seed of kmeans-lloyd's k-means++")
    p.set_defaults(func=cmd_pseudo)

    p = sub.add_parser("explain", help="Grad-CAM of a run's model for one class on one slice")
    p.add_argument("run", help="a run's output directory")
    p.add_argument("--slice", type=int, required=True, help="slice index")
    p.add_argument("--class", dest="cls", type=int, required=True, help="class id (as in the run's labels)")
    p.add_argument("--layer", help="module path (default: the model's cam_layer, e.g. bottleneck)")
    p.add_argument("--stage", choices=("stage2", "stage3"), default="stage3")
    p.add_argument("--volume", help="default: the volume the run read (from its inputs.json)")
    p.add_argument("--out", help="output prefix for .png and .npy (default: in the run directory)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("phantom", help="write a synthetic SR-CT volume and its ground truth")
    p.add_argument("out", help="output directory (volume.ome.zarr, truth.ome.zarr)")
    p.add_argument("--shape", type=_shape, default=DEMO_SHAPE, help="N,H,W (default 48,160,160)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fbp", action="store_true", help="streaks and rings by projection and filtered back-projection")
    p.set_defaults(func=cmd_phantom)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except SrjaxError as err:
        from tqdm import tqdm

        for bar in list(getattr(tqdm, "_instances", [])):  # bars the error cut short: end their lines first
            bar.close()
        print(f"srjax: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
