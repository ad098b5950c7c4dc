"""A finished run's model applied to other scans of its sample or campaign (``srjax predict``).

Each scan is labelled exactly as the run labelled its own volume (the run's stage-3
weights, inference settings and intensity guard, with the run's class ids and names)
into ``OUT/NAME/``: ``labels.ome.zarr``, ``confidence.ome.zarr``, ``net_labels.ome.zarr``
when the guard is on, and ``scan.json`` last, which marks the scan done. A killed
campaign rerun with the same command skips the scans that are done and starts again on
the one it was on. On several processes whole scans go round the processes, each
labelled by one process alone; the last few, fewer than the processes, are labelled by
all of them, each process taking its own share of the slices.

A scan whose values lie far outside the range the run was trained on is refused before
any work (``--force`` labels it anyway): the net saw voxel values scaled by the run's
range, and a scan from another instrument setting or another sample would be scaled
wrongly without a word.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from srjax import io, metrics, parallel, pipeline, rundir, stages, train
from srjax.errors import SrjaxError
from srjax.outputs import absolute, check_disjoint, check_parent_writable, exclusive, write_json
from srjax.sources import voxel_size_and_unit

SAMPLED_SLICES = 8  # slices per scan whose values are checked against the run's range
# A scan is refused when more than OUTSIDE_SHARE of its sampled voxels lie outside the run's
# range widened by MARGIN of its width each side.
OUTSIDE_SHARE = 0.01
MARGIN = 0.1
SUFFIXES = (".ome.zarr", ".zarr", ".n5", ".tiff", ".tif", ".h5", ".hdf5", ".npy")


class ScanDir(rundir.RunDir):
    """A scan's outputs in ``root``, labelled with the stage 1 and checkpoints of ``run``."""

    def __init__(self, root: Path, run: rundir.RunDir):
        super().__init__(root)
        self.source = run
        self.stage1 = run.stage1
        self.record = self.root / "scan.json"

    def checkpoints(self, stage: str) -> Path:
        return self.source.checkpoints(stage)

    def record_read_from(self, volume: Path | None, truth: Path | None) -> None:
        """Nothing: scan.json, written last, names the scan and its truth in their fingerprints."""


def scan_name(path: str | Path) -> str:
    """A scan's output folder: its file name without the format's suffix."""
    name = Path(str(path).rstrip("/")).name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def check_range(source, low: float, high: float, force: bool) -> None:
    """Refuse a scan whose sampled values lie far outside the run's range [low, high]."""
    depth = source.shape[0]
    zs = sorted({int(z) for z in np.linspace(0, depth - 1, min(depth, SAMPLED_SLICES)).round()})
    values = np.concatenate([np.asarray(source.read(z, z + 1), np.float64).ravel() for z in zs])
    margin = MARGIN * (high - low)
    outside = float(np.mean((values < low - margin) | (values > high + margin)))
    if outside > OUTSIDE_SHARE and not force:
        raise SrjaxError(f"{source.name}: {100 * outside:.1f} % of its sampled voxels lie outside the range the run "
                         f"was trained on ({low:.4g} to {high:.4g}); it is not a scan of the same kind. Pass --force "
                         "to label it anyway")


def predict_scans(run_root: str | Path, volumes: list[str], out: str | Path, truths: list[str] = (),
                  force: bool = False, progress: bool = True) -> list[dict]:
    """Label every scan of ``volumes`` with the finished run ``run_root`` into ``out``/NAME;
    score a scan against its ground truth when ``truths`` gives one (in the same order).
    Returns each scan's record (what its scan.json holds)."""
    run, config, _ = rundir.open_run(run_root)
    if not run.finished:
        raise SrjaxError(f"{run.root} has not finished; let the run finish before labelling other scans with it")
    if truths and len(truths) != len(volumes):
        raise SrjaxError(f"{len(truths)} --truth volumes for {len(volumes)} scans; give one per scan, in order")
    names = [scan_name(volume) for volume in volumes]
    if len(set(names)) < len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise SrjaxError(f"two scans would be written to {twice}; give each scan its own file name")
    out = absolute(out)
    stage1 = run.read(run.stage1)
    inputs = []
    for volume, truth in zip(volumes, list(truths) or [None] * len(volumes)):
        scan = pipeline.Input(volume, "scan")
        scan_truth = None if truth is None else pipeline.Input(truth, "truth")
        pipeline.check_inputs(scan.source, scan_truth and scan_truth.source, config, train.make_mesh())
        check_range(scan.source, stage1["low"], stage1["high"], force)
        check_disjoint(out, {"scan": scan.path, "truth": scan_truth and scan_truth.path, "run": run.root})
        inputs.append((scan, scan_truth))
    show = progress and parallel.is_main()
    with contextlib.ExitStack() as held:

        def claim():
            check_parent_writable(out)
            out.mkdir(parents=True, exist_ok=True)
            held.enter_context(exclusive(out / ".srjax.lock", f"output directory {out}"))

        parallel.on_main(claim)
        scans = [(ScanDir(out / name, run), scan, truth) for name, (scan, truth) in zip(names, inputs)]
        alone, shared = assignment(len(scans), parallel.count(), parallel.index())

        def own_scans():
            with parallel.alone():
                for i in alone:
                    _label_scan(*scans[i], config, show)

        parallel.together(own_scans)
        for i in shared:
            _label_scan(*scans[i], config, show)
        return [scan_dir.read(scan_dir.record) for scan_dir, _, _ in scans]


def assignment(scans: int, processes: int, process: int) -> tuple[list[int], list[int]]:
    """The scans a process labels by itself, and those every process labels a share of.
    Whole scans go round the processes (no process waits for another, and each reads and
    writes whole files); the last ``scans % processes``, too few to go round, are split by slices."""
    whole = scans - scans % processes
    return list(range(process, whole, processes)), list(range(whole, scans))


def _label_scan(scan_dir: ScanDir, scan: pipeline.Input, truth, config, progress: bool) -> None:
    """Label one scan into ``scan_dir``, unless it is done there already."""
    fingerprints = {"scan": rundir.fingerprint(scan.source, scan.path),
                    "truth": None if truth is None else rundir.fingerprint(truth.source, truth.path)}
    if scan_dir.record.exists():
        record = scan_dir.read(scan_dir.record)
        if record["inputs"] != fingerprints or record["run"] != str(scan_dir.source.root):
            raise SrjaxError(f"{scan_dir.root} holds the labels of another scan or run; pass a new --out")
        return
    parallel.on_main(lambda: scan_dir.root.mkdir(parents=True, exist_ok=True))
    size, unit = voxel_size_and_unit(scan.source)
    ctx = stages.Context(scan_dir, config, scan, truth, train.make_mesh(), size, unit, progress)
    ctx.open()
    stages.Predict("stage3").run(ctx)
    predictions = scan_dir.read(scan_dir.predictions)["stage3"]
    record = {"run": str(scan_dir.source.root), "inputs": fingerprints, **predictions}
    if ctx.truth_store is not None:
        record["scores"] = parallel.on_main(lambda: _scores(scan_dir.labels, ctx.truth_store, ctx.stage1["classes"]))
    parallel.on_main(lambda: write_json(scan_dir.record, record))


def _scores(labels_path: Path, truth, classes: int) -> dict:
    """Pixel accuracy and mIoU against the truth, predicted ids matched as in a run's scores."""
    num_true = max(int(io.read(truth[z], "truth").max()) for z in range(truth.shape[0])) + 1
    labels = io.open_volume(labels_path, "labels")
    return metrics.score(metrics.confusion(labels, truth, classes, num_true))
