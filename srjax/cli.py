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


def _config(args, base: cfg.Config) -> cfg.Config:
    config = cfg.load(args.config, base) if getattr(args, "config", None) else base
    return cfg.apply_overrides(config, args.set or [])


def _write_phantom(spec, out: Path):
    import numpy as np

    from srjax.io import npy_writer
    from srjax.phantom import make_phantom

    volume, truth = make_phantom(spec, progress=True)
    out.mkdir(parents=True, exist_ok=True)
    for name, array in (("volume.npy", volume), ("truth.npy", truth)):
        with npy_writer(out / name, array.shape, array.dtype) as dst:
            dst[:] = array
    return np.load(out / "volume.npy", mmap_mode="r"), np.load(out / "truth.npy", mmap_mode="r")


def cmd_phantom(args) -> None:
    from srjax.phantom import PhantomSpec

    spec = PhantomSpec(shape=args.shape, seed=args.seed, fbp=args.fbp)
    _write_phantom(spec, Path(args.out))
    print(f"wrote {args.out}/volume.npy and {args.out}/truth.npy, shape {spec.shape}")


def cmd_demo(args) -> None:
    from srjax.phantom import PhantomSpec
    from srjax.pipeline import run_pipeline
    from srjax.report import score_table

    config = _config(args, cfg.demo_config())
    out = Path(args.out)
    volume, truth = _write_phantom(PhantomSpec(shape=args.shape, seed=config.seed), out / "phantom")
    metrics = run_pipeline(volume, out, config, truth=truth, volume_name="phantom volume", truth_name="phantom truth")
    print(score_table(metrics))
    print(f"outputs in {out} (panel.png, metrics.json, labels.npy, confidence.npy)")


def cmd_run(args) -> None:
    from srjax.io import open_volume
    from srjax.pipeline import run_pipeline
    from srjax.report import score_table

    config = _config(args, cfg.Config())
    config = cfg.apply_overrides(config, [f"pseudo.classes={args.classes}"])
    volume = open_volume(args.volume, "volume")
    truth = open_volume(args.truth, "--truth") if args.truth else None
    metrics = run_pipeline(volume, args.out, config, truth=truth, volume_name=f"volume {args.volume}",
                           truth_name=f"--truth {args.truth}")
    if truth is not None:
        print(score_table(metrics))
    print(f"outputs in {args.out}")


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

    p = sub.add_parser("run", help="segment a volume (.npy or .tif/.tiff stack)")
    p.add_argument("volume")
    p.add_argument("--classes", type=int, required=True, help="number of classes K for the pseudo labels")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--truth", help="ground-truth label volume for scoring")
    add_config_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("phantom", help="write a synthetic SR-CT volume and its ground truth")
    p.add_argument("out", help="output directory (volume.npy, truth.npy)")
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
        print(f"srjax: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
