"""The three stages end to end in one run directory (``srjax.rundir``), resumable at any point.

Everything that can be checked without the long work is checked first: the config's
ranges, the input's format, shape and dtype, the sizes against the volume, the output
path against the inputs, and the run directory against the run it may already hold.
A rerun of a finished run does nothing; a rerun of an unfinished one resumes it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import jax
import numpy as np
import optax
import tensorstore as ts

from srjax import data, io, pseudo, report, rundir, summary, train
from srjax.config import Config, validate
from srjax.errors import SrjaxError
from srjax.losses import pixel_loss
from srjax.models import build_model
from srjax.outputs import check_disjoint, write_json
from srjax.predict import predict_volume
from srjax.sources import Source, from_store, import_volume, is_native, open_source, voxel_size_and_unit


class Input:
    """A volume the run reads: a path in any format, or an in-memory array or TensorStore."""

    def __init__(self, volume, name: str, dataset: str | None = None, fill_missing: bool = False):
        self.given, self.fill_missing = volume, fill_missing
        self.read_from: Path | None = None  # the store on disk the run reads, once ``store`` has run
        if isinstance(volume, (str, Path)):
            self.path = io.local_path(volume)
            self.source = open_source(volume, name, dataset, fill_missing)
        else:
            self.path, self.source = None, from_store(volume, name)

    def store(self, target: Path, progress: bool):
        """A TensorStore of it: the store itself when it is one, else its import at ``target`` (made once)."""
        if self.path is not None and is_native(self.path):
            self.read_from = self.path
            return io.open_volume(self.path, self.source.name, fill_missing=self.fill_missing)
        if self.path is None and isinstance(self.given, ts.TensorStore):
            return self.given
        if not target.exists():
            import_volume(self.source, target, progress=progress)
        self.read_from = target
        return io.open_volume(target, self.source.name)


def check_inputs(volume: Source, truth: Source | None, config: Config, mesh) -> None:
    """Shapes, dtypes and sizes that must fit together; needs no voxel reads."""
    io.check_layout(volume.shape, volume.dtype, volume.name)
    if truth is not None:
        io.check_layout(truth.shape, truth.dtype, truth.name)
        if tuple(truth.shape) != tuple(volume.shape):
            raise SrjaxError(f"{truth.name} has shape {tuple(truth.shape)} but the volume is {tuple(volume.shape)}")
        if np.dtype(truth.dtype).kind not in "ui":
            raise SrjaxError(f"{truth.name} has dtype {np.dtype(truth.dtype)}; ground-truth labels must be integers")
    devices = mesh.devices.size
    if config.data.batch_size % devices:
        raise SrjaxError(f"data.batch_size={config.data.batch_size} is not a multiple of the {devices} devices; "
                         "change it")
    for stage in (config.stage2, config.stage3):
        data.check_sizes(config.data, volume.shape, stage.epochs, stage.steps)
    pseudo.Mask(config.pseudo.mask or None, volume.shape, "pseudo.mask")  # opens and checks a mask volume


def run_pipeline(volume, out: str | Path, config: Config, truth=None, *, preset: str | None = None,
                 dataset: str | None = None, truth_dataset: str | None = None, voxel_size=None,
                 unit: str | None = None, fill_missing: bool = False, devices=None, progress: bool = True) -> dict:
    """Segment ``volume`` (a path in any format, an array or a TensorStore) into the run
    directory ``out``; returns what metrics.json holds."""
    validate(config)
    mesh = train.make_mesh(devices)
    volume = Input(volume, "volume", dataset, fill_missing)
    truth = None if truth is None else Input(truth, "truth", truth_dataset, fill_missing)
    check_inputs(volume.source, truth and truth.source, config, mesh)
    size, unit = voxel_size_and_unit(volume.source, voxel_size, unit)
    out = io.local_path(out)
    check_disjoint(out, {"volume": volume.path, "truth": truth and truth.path})
    fingerprints = {"volume": rundir.fingerprint(volume.source, volume.path),
                    "truth": None if truth is None else rundir.fingerprint(truth.source, truth.path)}
    with rundir.claim(out, config, fingerprints, preset) as run:
        if run.finished:
            return run.read(run.metrics)
        return _run(run, config, volume, truth, size, unit, mesh, progress)


def _run(run: rundir.RunDir, config: Config, volume: Input, truth: Input | None, size, unit, mesh, progress) -> dict:
    timings = {}
    start = time.perf_counter()
    store = volume.store(run.volume, progress)
    truth_store = None if truth is None else truth.store(run.truth, progress)
    run.record_read_from(volume.read_from, truth and truth.read_from)
    meta = {"voxel_size": size, "unit": unit}
    # OME-Zarr label images name the image they label, relative to themselves.
    image = None if volume.read_from is None else os.path.relpath(volume.read_from, run.pseudo_labels)
    labels_meta = dict(meta, chunks=io.LABEL_CHUNKS, source_image=image)
    stage1 = _pseudo_labels(run, store, config, labels_meta, progress)
    timings["stage1"] = time.perf_counter() - start
    pseudo_labels = io.open_volume(run.pseudo_labels, "pseudo labels")

    classes, dc = stage1["classes"], config.data
    model = build_model(config.model.name, classes, config.model.width, config.model.dropout)
    loss_fn = pixel_loss(config.loss)
    low, high = stage1["low"], stage1["high"]
    common = dict(seed=config.seed, checkpoint_every=config.checkpoint_every, read_threads=dc.read_threads,
                  progress=progress)

    start = time.perf_counter()
    params = train.init_params(model, dc.slices, dc.crop, config.seed)
    optimizer = optax.adam(config.stage2.learning_rate)
    state = train.FitState(step=jax.numpy.zeros((), jax.numpy.int32), params=params, opt_state=optimizer.init(params))
    dataset = data.crop_dataset(store, pseudo_labels, dc, low, high, config.stage2.epochs, config.seed,
                                config.stage2.steps)
    step = train.bind_fit_step(model, optimizer, loss_fn, config.stage2)
    state2, history2, _ = train.train("stage 2", step, state, dataset, mesh, run.checkpoints("stage2"), **common)
    timings["stage2"] = time.perf_counter() - start

    start = time.perf_counter()
    # Stage 3 starts from the stage-2 checkpoint on disk, not from memory.
    stage2_params = train.restore_state(run.checkpoints("stage2"), state2, mesh)[0].params
    optimizer = optax.adam(config.stage3.learning_rate)
    state = train.CorrectState(
        step=jax.numpy.zeros((), jax.numpy.int32),
        params=stage2_params,
        opt_state=optimizer.init(stage2_params),
        teacher=jax.tree.map(jax.numpy.copy, stage2_params),  # own buffers: the step donates both
    )
    dataset = data.crop_dataset(store, None, dc, low, high, config.stage3.epochs, config.seed + 1,
                                config.stage3.steps)
    step = train.bind_correct_step(model, optimizer, loss_fn, config.stage3)
    state3, history3, sums3 = train.train("stage 3", step, state, dataset, mesh, run.checkpoints("stage3"), **common)
    timings["stage3"] = time.perf_counter() - start
    history = {"stage2": history2, "stage3": history3}
    write_json(run.history, history)

    start = time.perf_counter()
    names = pseudo.class_names(stage1["means"])
    predict = dict(model=model, volume=store, low=low, high=high, num_slices=dc.slices,
                   batch_size=config.predict_batch, mesh=mesh, progress=progress)
    if not run.stage2_labels.exists():
        with io.ome_zarr_writer(run.stage2_labels, store.shape, np.uint8, name="stage 2", labels=names,
                                **labels_meta) as labels:
            predict_volume(params=state2.params, labels_out=labels, desc="predict stage 2", **predict)
    if not (run.labels.exists() and run.confidence.exists()):
        with (
            io.ome_zarr_writer(run.labels, store.shape, np.uint8, name="stage 3", labels=names, **labels_meta) as labels,
            io.ome_zarr_writer(run.confidence, store.shape, np.float32, name="confidence", chunks=io.LABEL_CHUNKS,
                               **meta) as confidence,
        ):
            predict_volume(params=state3.teacher, labels_out=labels, confidence_out=confidence,
                           desc="predict stage 3", **predict)
    timings["predict"] = time.perf_counter() - start

    steps3 = len(history3)
    kept_by_class = np.asarray(sums3["kept_by_class"]) / steps3
    metrics = _summarise(run, store, truth_store, stage1, names, meta, kept_by_class, history, progress)
    metrics["seconds"] = timings
    metrics["final_loss"] = {"stage2": history2[-1]["loss"], "stage3": history3[-1]["loss"]}
    metrics["devices"] = int(mesh.devices.size)
    write_json(run.metrics, metrics)  # last: its presence marks the run finished
    return metrics


def _pseudo_labels(run: rundir.RunDir, store, config: Config, labels_meta: dict, progress: bool) -> dict:
    if run.stage1.exists() and run.pseudo_labels.exists():
        return run.read(run.stage1)
    pc = config.pseudo
    result = pseudo.write_pseudo_labels(from_store(store, "volume"), run.pseudo_labels, pc.method, pc.classes,
                                        pc.mask or None, config.seed, progress, labels_meta["voxel_size"],
                                        labels_meta["unit"], labels_meta["source_image"])
    info = result.summary()
    if result.curve and progress:
        print(report.k_curve(result.curve))
    write_json(run.stage1, info)
    return info


def _summarise(run, store, truth_store, stage1: dict, names, meta, kept_by_class, history, progress) -> dict:
    """metrics.json's content, panel.png and report.html."""
    classes = stage1["classes"]
    predictions = {"pseudo": run.pseudo_labels, "stage2": run.stage2_labels, "stage3": run.labels}
    volumes = {key: io.open_volume(path, key) for key, path in predictions.items()}
    if truth_store is not None:
        volumes["truth"] = truth_store
    counts = summary.tally(volumes, io.open_volume(run.confidence, "confidence"), progress=progress)
    metrics = {"classes": classes, "stage1_means": stage1["means"],
               "summary": summary.summarise(counts, classes, names, meta["voxel_size"], meta["unit"], kept_by_class)}
    if truth_store is not None:
        metrics["scoring"] = report.SCORING
        metrics.update(summary.scores(counts, classes))
    _figures(run, store, volumes, stage1, names, metrics, history)
    return metrics


def _figures(run, store, volumes: dict, stage1: dict, names: list[str], metrics: dict, history: dict) -> None:
    low, high = stage1["low"], stage1["high"]
    truth = "truth" in volumes
    mappings = {key: np.asarray(metrics[key]["mapping"]) for key, _ in summary.STAGES} if truth else {}
    shown_names = names
    if truth:
        num_true = len(metrics["stage3"]["iou"]) + 1
        shown_names = [f"true class {c}" for c in range(max(num_true, max(max(m) for m in mappings.values()) + 1))]
    titles = dict(summary.STAGES, truth="ground truth")

    def columns(index) -> list[tuple[str, np.ndarray]]:
        shown = []
        for key, volume in volumes.items():
            labels = io.read(volume[index], key)
            shown.append((titles[key], mappings[key][labels] if key in mappings else labels))
        return shown

    depth, h, w = store.shape
    z = depth // 2
    matched = " (predictions matched to true classes by maximum overlap)" if truth else ""
    report.panel(run.panel, data.normalise(io.read(store[z], "volume"), low, high), columns(z), shown_names,
                 f"slice {z}{matched}")
    step = max(1, -(-max(store.shape) // 400))  # about 400 px across: the report stays small
    planes = []
    for title, index in ((f"slice z={depth // 4}", np.s_[depth // 4, ::step, ::step]),
                         (f"slice z={z}", np.s_[z, ::step, ::step]),
                         (f"slice z={3 * depth // 4}", np.s_[3 * depth // 4, ::step, ::step]),
                         (f"plane y={h // 2}", np.s_[::step, h // 2, ::step]),
                         (f"plane x={w // 2}", np.s_[::step, ::step, w // 2])):
        planes.append((title, data.normalise(io.read(store[index], "volume"), low, high), columns(index)))
    report.html_report(run.report, f"srjax run {run.root.name}{matched}", metrics, history, planes, shown_names)
