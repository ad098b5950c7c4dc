"""srjax: label-free segmentation of synchrotron X-ray CT volumes.

Pseudo labels by clustering voxel values (stage 1), a 2.5D segmentation net fitted to
them (stage 2), and Unbiased-Teacher self-correction (stage 3). Start with
`srjax demo`; segment a scan with `srjax run SCAN --classes K --out DIR`.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from pathlib import Path

from srjax import __version__
from srjax import config as cfg
from srjax.errors import SrjaxError

DEMO_SHAPE = (48, 160, 160)
INTERRUPTED = 130


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
    if len(values) != 3 or not all(0 < v < float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} is not one or three positive sizes Z,Y,X")
    return values


def _classes(text: str):
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer or 'auto'") from None
    if not 2 <= value <= cfg.MAX_CLASSES:
        raise argparse.ArgumentTypeError(f"{value} is not between 2 and {cfg.MAX_CLASSES} (uint8 labels)")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; seeds are 0 or more")
    return value


def _config(args, preset: str) -> cfg.Config:
    from srjax import presets

    config = presets.get(preset)
    config = presets.with_recipe(config, args.recipe) if args.recipe else config
    config = cfg.load(args.config, config) if args.config else config
    config = cfg.apply_overrides(config, args.set or [])
    cfg.validate(config)
    return config


def _print_results(metrics: dict, out) -> None:
    from srjax.report import score_table, summary_table

    print(summary_table(metrics["summary"]))
    if "guard" in metrics:
        guard = metrics["guard"]
        print(f"intensity guard: {100 * guard['moved_fraction']:.2f} % of the voxels moved off the stage-3 net's "
              f"labels (noise sd {guard['noise_sd']:.4g}); the net's own labels are in net_labels.ome.zarr")
    if "stage3" in metrics:
        print(score_table(metrics))
    print(f"outputs in {out}: labels.ome.zarr, confidence.ome.zarr, report.html, panel.png, metrics.json")


def cmd_phantom(args) -> None:
    from srjax import io
    from srjax.outputs import absolute, claim_output
    from srjax.phantom import family, make_phantom

    if args.family == "corrosion":
        return _series_phantom(args)
    if args.steps is not None:
        raise SrjaxError(f"--steps is for the 4-D family corrosion; {args.family} is one volume")
    out = absolute(args.out)
    paths = [out / "volume.ome.zarr", out / "truth.ome.zarr"]
    spec = dataclasses.replace(family(args.family, args.shape, args.seed), fbp=args.fbp)
    with claim_output(paths[0], {}, args.overwrite), claim_output(paths[1], {}, args.overwrite):
        volume, truth = make_phantom(spec, progress=True)
        for path, array in zip(paths, (volume, truth)):
            io.write_volume(path, array, name=f"phantom {path.name.split('.')[0]}")
    print(f"wrote {paths[0]} and {paths[1]}, shape {tuple(args.shape)}")


def _series_phantom(args) -> None:
    import dataclasses

    from srjax import io
    from srjax.outputs import absolute, atomic_path, claim_output, write_json
    from srjax.phantom4d import CLASS_NAMES, SeriesSpec, make_series, truth_events

    spec = SeriesSpec(shape=args.shape, steps=args.steps or SeriesSpec.steps, seed=args.seed)
    try:
        series = make_series(spec)
    except ValueError as err:
        raise SrjaxError(f"--shape {args.shape}: {err}") from None
    out = absolute(args.out)
    with claim_output(out, {}, args.overwrite), atomic_path(out) as tmp:
        for t in range(spec.steps):
            for name, array, labels in (("volume", series.volumes[t], None), ("truth", series.labels[t], CLASS_NAMES),
                                        ("objects", series.objects[t], None)):
                io.write_volume(tmp / f"{name}_t{t:04d}.ome.zarr", array, name=f"corrosion {name} t{t}",
                                labels=None if labels is None else list(labels))
        write_json(tmp / "summary.json", {
            "srjax": {"written_by": f"srjax {__version__}", "command": "phantom"},
            "spec": dataclasses.asdict(spec), "classes": list(CLASS_NAMES), "shifts": series.shifts.tolist(),
            "crack_lengths": list(series.crack_lengths), "objects": [dataclasses.asdict(b) for b in series.balls],
            "events": {name: truth_events(series, c) for c, name in enumerate(CLASS_NAMES) if c}})
    print(f"wrote {spec.steps} time steps to {out}: volume_tNNNN, truth_tNNNN, objects_tNNNN .ome.zarr, and "
          "summary.json (displacements, objects, events)")


def cmd_demo(args) -> None:
    from srjax.phantom import PhantomSpec, make_phantom
    from srjax.pipeline import run_pipeline

    config = _config(args, args.preset)
    print(f"preset {args.preset}; a {args.shape[0]}x{args.shape[1]}x{args.shape[2]} phantom, seed {config.seed}")
    volume, truth = make_phantom(PhantomSpec(shape=args.shape, seed=config.seed), progress=True)
    metrics = run_pipeline(volume, args.out, config, truth=truth, preset=args.preset)
    _print_results(metrics, args.out)


def cmd_run(args) -> None:
    from srjax import parallel, presets
    from srjax.pipeline import run_pipeline

    preset = args.preset
    if preset is None:
        preset, why = presets.default_preset()
        print(f"preset {preset} ({why})")
    overrides = [f"pseudo.classes={args.classes}"]
    overrides += [f"pseudo.method={args.method}"] if args.method else []
    overrides += [f"pseudo.mask={args.mask}"] if args.mask else []
    config = cfg.apply_overrides(_config(args, preset), overrides)
    metrics = run_pipeline(args.volume, args.out, config, truth=args.truth, preset=preset, dataset=args.dataset,
                           truth_dataset=args.truth_dataset, voxel_size=args.voxel_size, unit=args.unit,
                           fill_missing=args.fill_missing, labels=args.labels)
    if parallel.is_main():
        _print_results(metrics, args.out)


def cmd_import(args) -> None:
    from srjax.outputs import absolute, claim_output
    from srjax.sources import import_volume, open_source

    out = absolute(args.out)
    source = open_source(args.source, "source", args.dataset, args.fill_missing)
    with claim_output(out, {"source": args.source}, args.overwrite):
        import_volume(source, out, chunks=args.chunks, voxel_size=args.voxel_size, unit=args.unit)
    print(f"wrote {out}: shape {source.shape}, dtype {source.dtype}, chunks {args.chunks}")


def cmd_pseudo(args) -> None:
    import json

    from srjax.outputs import absolute, claim_output
    from srjax.pseudo import check_classes, check_method, write_pseudo_labels
    from srjax.report import k_curve
    from srjax.sources import open_source, voxel_size_and_unit

    check_method(args.method)
    check_classes(args.method, args.classes, "--classes")
    out = absolute(args.out)
    source = open_source(args.volume, "volume", args.dataset, args.fill_missing)
    mask_path = None if args.mask in (None, "circle") else args.mask
    size, unit = voxel_size_and_unit(source)
    with claim_output(out, {"volume": args.volume, "mask": mask_path}, args.overwrite):
        result = write_pseudo_labels(source, out, args.method, args.classes, args.mask, args.seed,
                                     progress=True, voxel_size=size, unit=unit)
    summary = result.summary()
    if result.curve:
        print(k_curve(result.curve))
    print(json.dumps({key: summary[key] for key in ("method", "classes", "means", "objective_name", "objective")}))
    print(f"wrote {out}")


def cmd_explain(args) -> None:
    import numpy as np

    from srjax import io
    from srjax.data import normalise, read_stack
    from srjax.explain import grad_cam
    from srjax.models import build_model
    from srjax.outputs import atomic_path
    from srjax.report import overlay
    from srjax.rundir import open_run
    from srjax.train import latest_params, prediction_key

    run, config, record = open_run(args.run)
    if not run.stage1.exists():
        raise SrjaxError(f"{run.root} has no stage1.json yet; let the run finish stage 1 first")
    stage1 = run.read(run.stage1)
    where = args.volume or (record.get("read_from") or {}).get("volume")
    if where is None:
        raise SrjaxError(f"{run.root} does not say where its volume is; pass --volume")
    volume = io.open_volume(where, "--volume")
    if not 0 <= args.slice < volume.shape[0]:
        raise SrjaxError(f"--slice {args.slice} is outside the volume's 0-{volume.shape[0] - 1}")
    params = latest_params(run.checkpoints(args.stage), prediction_key(args.stage, config))
    model = build_model(config.model.name, stage1["classes"], config.model.width, config.model.dropout)
    full = slice(None)
    image = read_stack(volume, args.slice, config.data.slices, full, full, stage1["low"], stage1["high"])
    cam = grad_cam(model, params, image, args.cls, args.layer)
    layer = args.layer or model.cam_layer
    prefix = Path(args.out) if args.out else run.root / f"gradcam_{args.stage}_slice{args.slice}_class{args.cls}"
    with atomic_path(prefix.with_suffix(".npy")) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, cam.astype(np.float32))
    middle = normalise(io.read(volume[args.slice], "--volume"), stage1["low"], stage1["high"])
    overlay(prefix.with_suffix(".png"), middle, cam,
            f"Grad-CAM of class {args.cls} at {layer} ({config.model.name}, {args.stage}), slice {args.slice}")
    print(f"wrote {prefix.with_suffix('.png')} and {prefix.with_suffix('.npy')}")


def cmd_sweep(args) -> None:
    from srjax import parallel, sweep

    if args.status:
        for name, state in sweep.status(args.status):
            print(f"{name:48} {state}")
        return
    if not (args.file and args.out):
        raise SrjaxError("srjax sweep needs a sweep file and --out DIR (or --status DIR); "
                         "for example srjax sweep experiments/seeds.py --out seeds-sweep")
    study = sweep.load(args.file, args.size)
    print(f"sweep {study.name}: {len(study.members)} members at size {args.size}")
    rows = sweep.run_sweep(study, args.out, args.size, str(args.file), populations=args.populations,
                           members=tuple(args.members), prior=tuple(args.prior))
    if parallel.is_main():
        print(f"{len(rows)} members finished; results in {args.out}: results.md, results.csv, results.json, "
              "results.png")


def cmd_predict(args) -> None:
    from srjax import parallel
    from srjax.campaign import predict_scans, scan_name

    records = predict_scans(args.run, args.volumes, args.out, args.truth, args.force)
    if parallel.is_main():
        for volume, record in zip(args.volumes, records):
            scores = record.get("scores")
            scored = f", pixel accuracy {100 * scores['pixel_accuracy']:.2f} %, mIoU {100 * scores['miou']:.2f} %" \
                if scores else ""
            print(f"{scan_name(volume)}: mean confidence {record['mean_confidence']:.3f}{scored}")
        print(f"labels in {args.out}/NAME/labels.ome.zarr, confidence in {args.out}/NAME/confidence.ome.zarr")


def cmd_quantify(args) -> None:
    from srjax.analysis.quantify import quantify, report

    record = quantify(args.labels, args.cls, args.out, args.connectivity, args.min_voxels, args.voxel_size,
                      args.unit, args.overwrite, min_overlap=args.min_overlap, near=args.near if args.graphs else None)
    print(report(record["steps"], record["unit"]))
    series = ", links.csv, events.csv, trajectories.png" if len(args.labels) > 1 else ""
    graphs = ", graphs" if args.graphs else ""
    print(f"outputs in {args.out}: features.csv, features.parquet, instances, sizes.png{series}{graphs}, summary.md, "
          "summary.json")


def cmd_query(args) -> None:
    from srjax.analysis import tables
    from srjax.analysis.query import query

    table = tables.read(args.features)
    picked = query(table, args.expression, args.top, args.by, args.ascending)
    columns = args.columns.split(",") if args.columns else list(table)
    for column in columns:
        if column not in table:
            raise SrjaxError(f"--columns: no column {column!r}; the columns are {', '.join(table)}")
    print("\t".join(columns))
    for row in tables.rows({c: table[c] for c in columns}, picked):
        print("\t".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row.values()))
    sys.stdout.flush()
    print(f"{len(picked)} of {len(table['id'])} features", file=sys.stderr)


def cmd_sample(args) -> None:
    from srjax.analysis.sample import Choice, comparison_table, sample

    record = sample(args.volumes, args.out, args.budget, args.method, args.seed, args.run, args.tile, args.every,
                    Choice(args.alpha, args.metric, args.clusters), args.compare, args.alpha_sweep, args.template,
                    args.overwrite)
    print(f"{record['tiles']} tiles ({record['embedding']} embeddings, domain signal: {record['signal']}); "
          f"diversity of each selection, as a ratio to the population:")
    print(comparison_table(record["scores"]))
    print(f"outputs in {args.out}: selection.csv, tiles.parquet, contact_sheet.png, scatter.png, summary.json"
          + (", compare.md" if args.compare else "") + (", alpha.csv, alpha.png" if args.alpha_sweep else "")
          + (", " + ", ".join(record["templates"]) if args.template else ""))


def _connectivity(text: str) -> int:
    if text not in ("6", "18", "26"):
        raise argparse.ArgumentTypeError(f"{text!r} is not 6, 18 or 26")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    from srjax.presets import PRESETS, RECIPES

    parser = argparse.ArgumentParser(prog="srjax", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"srjax {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_config_options(p, preset_help):
        p.add_argument("--preset", choices=tuple(PRESETS), help=preset_help)
        p.add_argument("--recipe", choices=tuple(RECIPES),
                       help="paper: the paper's net, stage 3 and whole-slice inference, on top of the preset")
        p.add_argument("--config", help="a .json or .toml config file, applied on top of the preset")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config key, e.g. stage2.epochs=50 or model=unet (repeatable)")

    def add_processes(p):
        p.add_argument("--coordinator", metavar="HOST:PORT",
                       help="run as one of several processes: the address of process 0 (and --num-processes, "
                       "--process-id; or SRJAX_COORDINATOR etc.). Under SLURM or MPI this is detected")
        p.add_argument("--num-processes", type=int, metavar="N", help="how many processes run this command")
        p.add_argument("--process-id", type=int, metavar="I", help="this process's number, 0 to N - 1")

    def add_overwrite(p):
        p.add_argument("--overwrite", action="store_true",
                       help="replace an OUT srjax wrote, once the new one is complete")

    def add_voxel_size(p, whose: str = "volume's"):
        p.add_argument("--voxel-size", type=_floats3, help=f"Z,Y,X voxel size (default: the {whose}, if recorded)")
        p.add_argument("--unit", help="unit of --voxel-size (default micrometer), e.g. nanometer or µm")

    def add_fill_missing(p):
        p.add_argument("--fill-missing", action="store_true",
                       help="read chunks missing from a Zarr/N5 store as its fill value (default: an error)")

    p = sub.add_parser("demo", help="make a phantom and run all three stages on it, CPU-sized, scored")
    p.add_argument("--out", default="srjax-demo", help="output directory (default: srjax-demo)")
    p.add_argument("--shape", type=_shape, default=DEMO_SHAPE, help="phantom size N,H,W (default 48,160,160)")
    add_config_options(p, "config preset (default cpu)")
    p.set_defaults(func=cmd_demo, preset="cpu")

    volume_help = "Zarr/N5/OME-Zarr store, TIFF file or directory, HDF5 file, or .npy"
    p = sub.add_parser("run", help="segment a volume: pseudo labels, stage 2, stage 3, summary and report")
    p.add_argument("volume", help=volume_help + " (anything but a store is imported into OUT first)")
    p.add_argument("--classes", type=_classes, required=True, help="number of classes K (2-255), or 'auto'")
    p.add_argument("--out", required=True, help="run directory: new, empty, or a run of the same input and config")
    p.add_argument("--method", help="pseudo-label clusterer (default kmeans)")
    p.add_argument("--mask", help="cluster only inside 'circle' (the reconstruction circle) or a mask volume")
    p.add_argument("--truth", help="ground-truth label volume for scoring")
    p.add_argument("--labels", help="sparse labels stages 2 and 3 learn: the run's class ids on a few slices or tiles, "
                   "255 elsewhere (e.g. a template of `srjax sample --template`, corrected)")
    p.add_argument("--dataset", help="HDF5 dataset of the volume (default /exchange/data)")
    p.add_argument("--truth-dataset", help="HDF5 dataset of --truth (default /exchange/data)")
    add_voxel_size(p)
    add_fill_missing(p)
    add_config_options(p, "config preset (default: paper on an accelerator, cpu otherwise)")
    add_processes(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("predict", help="label other scans of a sample or campaign with a finished run's model",
                       description="Label each scan as the run labelled its own volume (its stage-3 model, "
                       "inference settings, guard and class ids) into OUT/NAME/. Rerun the same command to finish a "
                       "killed campaign.")
    p.add_argument("run", help="a finished run's directory")
    p.add_argument("volumes", nargs="+", metavar="VOLUME", help=volume_help)
    p.add_argument("--out", required=True, help="output directory: one folder per scan, named after its file")
    p.add_argument("--truth", action="append", default=[],
                   help="ground-truth labels of each scan, in the order of the scans, for scoring (repeatable)")
    p.add_argument("--force", action="store_true",
                   help="label scans whose values lie far outside the range the run was trained on")
    add_processes(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("import", help="convert a volume into a chunked, compressed OME-Zarr")
    p.add_argument("source", help=volume_help)
    p.add_argument("out", help="the OME-Zarr to write, e.g. scan.ome.zarr")
    p.add_argument("--dataset", help="HDF5 dataset (default /exchange/data)")
    p.add_argument("--chunks", type=_shape, default=(1, 512, 512), help="chunk shape Z,Y,X (default 1,512,512)")
    add_voxel_size(p, "source's")
    add_overwrite(p)
    add_fill_missing(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("pseudo", help="stage 1 alone: pseudo labels by clustering voxel values")
    p.add_argument("volume", help=volume_help)
    p.add_argument("--method", default="kmeans", help="kmeans | kmeans-lloyd | otsu | gmm | gmm-full")
    p.add_argument("--classes", type=_classes, required=True, help="number of classes K (2-255), or 'auto'")
    p.add_argument("--out", required=True, help="the OME-Zarr label image to write")
    p.add_argument("--mask", help="cluster only inside 'circle' (the reconstruction circle) or a mask volume")
    p.add_argument("--dataset", help="HDF5 dataset (default /exchange/data)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of kmeans-lloyd's k-means++")
    add_overwrite(p)
    add_fill_missing(p)
    p.set_defaults(func=cmd_pseudo)

    p = sub.add_parser("explain", help="Grad-CAM of a run's model for one class on one slice")
    p.add_argument("run", help="a run's output directory")
    p.add_argument("--slice", type=int, required=True, help="slice index")
    p.add_argument("--class", dest="cls", type=int, required=True, help="class id (as in the run's labels)")
    p.add_argument("--layer", help="module path (default: the model's cam_layer, e.g. bottleneck)")
    p.add_argument("--stage", choices=("stage2", "stage3"), default="stage3")
    p.add_argument("--volume", help="default: the volume the run read (from its run.json)")
    p.add_argument("--out", help="output prefix for .png and .npy (default: in the run directory)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("sweep", help="run a study (a sweep file of experiments/) sharing work between its runs",
                       description="Run every member of a sweep file as a run directory DIR/runs/NAME, sharing "
                       "stage 1 and stage 2 between members that would compute the same, then write "
                       "results.md/csv/json/png. Rerun the same command to finish a killed sweep.")
    p.add_argument("file", nargs="?", help="a sweep file, e.g. experiments/seeds.py")
    p.add_argument("--out", help="sweep directory: new, empty, or this sweep's")
    p.add_argument("--size", choices=tuple(PRESETS), default="cpu",
                   help="tiny (tests, seconds a run), cpu (a 2-core machine), paper (an accelerator); default cpu")
    p.add_argument("--populations", action=argparse.BooleanOptionalAction, default=None,
                   help="train members that differ only in values (seed, learning rate, δ, α, ...) as one vmapped "
                   "population; default: on an accelerator only (on a CPU they are slower than one by one)")
    p.add_argument("--members", nargs="+", default=[], metavar="PATTERN",
                   help="run only the members whose name matches one of these shell patterns, e.g. "
                   "'*,default,*' or '*seed=0': a share of a long study")
    p.add_argument("--prior", action="append", default=[], metavar="DIR",
                   help="a sweep directory (or its results.json) of the same study and size: members it finished "
                   "are not rerun and join this directory's tables (repeatable)")
    p.add_argument("--status", metavar="DIR", help="print what each member of the sweep in DIR has done, and stop")
    add_processes(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("sample", help="the tiles most worth labelling: random, TypiClust, ProbCover or DIDS",
                       description="Choose BUDGET 2-D tiles (or whole slices) of a volume or a time series by "
                       "diversity sampling, and score each selection's diversity. Embeddings come from --run's "
                       "own encoder, or from tile statistics without one; a time series adds each tile's "
                       "displacement between steps as the domain signal DIDS mixes in by --alpha.")
    p.add_argument("volumes", nargs="+", metavar="VOLUME", help="Zarr/N5/OME-Zarr volume(s); several: a time series")
    p.add_argument("--budget", type=int, required=True, metavar="N", help="how many tiles to choose")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--method", default="dids", help="random | typiclust | probcover | dids (default)")
    p.add_argument("--run", help="a finished run on these volumes: its encoder embeds the tiles")
    p.add_argument("--tile", type=int, default=64, metavar="SIZE", help="tile side in voxels (0: whole slices)")
    p.add_argument("--every", type=int, default=1, metavar="K", help="tiles from every K-th slice (default 1)")
    p.add_argument("--alpha", type=float, default=0.85, help="DIDS: weight of embedding distance against the "
                   "domain signal's (1: embeddings only; default 0.85)")
    p.add_argument("--metric", default="euclidean", help="DIDS: euclidean (default) or cosine")
    p.add_argument("--clusters", type=int, help="k-means clusters DIDS allocates picks over (default min(N, 10))")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--compare", action="store_true", help="every method on the same tiles, scored side by side")
    p.add_argument("--alpha-sweep", action="store_true", help="DIDS at α = 0, 0.1, ..., 1: alpha.png")
    p.add_argument("--template", action="store_true",
                   help="write a sparse labels template (the picks from --run's labels, the rest unlabelled)")
    add_overwrite(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("quantify", help="every 3-D feature of a class: counted, measured, an instance image",
                       description="Label the connected components of class C in each label volume (out of core, "
                       "slab by slab) and measure each: voxels, volume, centroid, bounding box, principal axes, "
                       "equivalent diameter. Several volumes are a time series, in the order given.")
    p.add_argument("labels", nargs="+", metavar="LABELS",
                   help="label volume(s): a run's labels.ome.zarr or any integer " + volume_help)
    p.add_argument("--class", dest="cls", type=int, nargs="+", required=True, metavar="C",
                   help="the class id(s) whose features to count, each on its own")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--min-voxels", type=int, default=1, metavar="N", help="leave out features smaller than N voxels")
    p.add_argument("--connectivity", type=_connectivity, default=6,
                   help="6 (faces, default, as scipy.ndimage.label), 18 (and edges) or 26 (and corners)")
    p.add_argument("--graphs", action="store_true",
                   help="write scene graphs (GraphML and JSON): a node per feature, edges between near features "
                   "and, in a series, to the features they overlap a step later")
    p.add_argument("--near", type=float, default=2.0, metavar="D",
                   help="with --graphs: join features whose bounding boxes come within D (physical units; default 2)")
    p.add_argument("--min-overlap", type=int, default=1, metavar="N",
                   help="a series: link features of consecutive steps that share at least N voxels (default 1)")
    add_voxel_size(p)
    add_overwrite(p)
    p.set_defaults(func=cmd_quantify)

    p = sub.add_parser("query", help="features of a quantify table that match a condition, e.g. the largest",
                       description="Print the features where EXPRESSION holds (columns, numbers, comparisons, "
                       "and/or/not, arithmetic), e.g. srjax query DIR \"volume > 1000 and time == 25\" --top 5 "
                       "--by volume")
    p.add_argument("features", help="a quantify output directory, or its features.csv / features.parquet")
    p.add_argument("expression", nargs="?", help="the condition (default: every feature)")
    p.add_argument("--top", type=int, metavar="N", help="at most N features")
    p.add_argument("--by", metavar="COLUMN", help="order by this column, largest first")
    p.add_argument("--ascending", action="store_true", help="with --by: smallest first")
    p.add_argument("--columns", metavar="A,B,...", help="columns to print (default: all)")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("phantom", help="write a synthetic SR-CT volume and its ground truth")
    p.add_argument("out", help="output directory (volume.ome.zarr, truth.ome.zarr)")
    p.add_argument("--shape", type=_shape, default=DEMO_SHAPE, help="N,H,W (default 48,160,160)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--family", default="magnesium",
                   help="the sample: magnesium (drift, thin sheets; the demo), composite (well separated phases), "
                   "cupping (composite with beam hardening), rock (a rare bright mineral, cracks); or corrosion, "
                   "a 4-D series (pores that appear, grow and merge, a growing crack, a moving sample)")
    p.add_argument("--steps", type=int, help="corrosion: time steps (default 6)")
    p.add_argument("--fbp", action="store_true", help="streaks and rings by projection and filtered back-projection")
    p.add_argument("--overwrite", action="store_true", help="replace a phantom srjax wrote there")
    p.set_defaults(func=cmd_phantom)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from srjax.outputs import interrupt
    from srjax.progress import close_all

    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a job started in the background keeps ignoring it
        signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)  # a batch system's stop: the same clean exit as Ctrl-C
    try:
        if hasattr(args, "coordinator"):
            from srjax import parallel

            parallel.initialize(args.coordinator, args.num_processes, args.process_id)
        args.func(args)
    except SrjaxError as err:
        close_all()
        print(f"srjax: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # what the system refused that no check could foresee (e.g. a full disk)
        close_all()
        where = f"{err.filename}: " if err.filename else ""
        print(f"srjax: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        close_all()
        print("srjax: interrupted; run the same command again to resume", file=sys.stderr)
        return INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
