"""The steps of a run: pseudo labels, stage 2, stage 3, the two predictions, the summary.

Each step does one job, reads what it needs from the run directory rather than from
the step before it, and tells from the run directory whether it is done. A run is
therefore a loop over the steps, a rerun skips what is finished, and a step can be
replaced or added without touching the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from pathlib import Path
from typing import Protocol

import jax
import numpy as np

from srjax import data, io, parallel, pseudo, report, rundir, sparse, summary, train
from srjax.config import Config
from srjax.losses import loss_values
from srjax.models import build_model
from srjax.optim import OptimizerSpec, make_optimizer
from srjax.outputs import write_json
from srjax.guard import guard_labels
from srjax.predict import predict_volume
from srjax.sources import from_store
from srjax.stopping import levelled_off


@dataclasses.dataclass
class Context:
    """What every step of one run may use. ``store`` and ``truth_store`` are set by ``open``."""

    run: rundir.RunDir
    config: Config
    volume: object  # a pipeline.Input
    truth: object | None
    mesh: object
    voxel_size: tuple | None
    unit: str | None
    progress: bool
    labels: object | None = None  # a pipeline.Input of sparse labels (``srjax run --labels``)
    store: object = None
    truth_store: object = None

    @property
    def has_sparse(self) -> bool:
        """Whether stages 2 and 3 learn labelled pixels: given ones, or an oracle's."""
        return self.labels is not None or self.config.sparse.oracle_slices > 0

    def open(self) -> None:
        # A volume in another format is imported once, by the main process; then every process opens it.
        opened = parallel.on_main(self._stores)
        self.store, self.truth_store = opened if parallel.is_main() else self._stores()
        parallel.on_main(lambda: self.run.record_read_from(self.volume.read_from, self.truth and self.truth.read_from))

    def _stores(self) -> tuple:
        return (self.volume.store(self.run.volume, self.progress),
                None if self.truth is None else self.truth.store(self.run.truth, self.progress))

    @functools.cached_property
    def local_mesh(self):
        """The mesh of this process's own devices: inference needs no other process."""
        return train.make_mesh(jax.local_devices())

    @functools.cached_property
    def stage1(self) -> dict:
        return self.run.read(self.run.stage1)

    @functools.cached_property
    def model(self):
        mc = self.config.model
        return build_model(mc.name, self.stage1["classes"], mc.width, mc.dropout)

    @property
    def class_names(self) -> list[str]:
        return pseudo.class_names(self.stage1["means"])

    @property
    def labels_meta(self) -> dict:
        """Metadata of every label volume; OME-Zarr labels name their image relative to themselves."""
        image = None if self.volume.read_from is None else os.path.relpath(self.volume.read_from, self.run.pseudo_labels)
        return {"voxel_size": self.voxel_size, "unit": self.unit, "chunks": io.LABEL_CHUNKS, "source_image": image}


class Step(Protocol):
    name: str

    def done(self, ctx: Context) -> bool: ...

    def run(self, ctx: Context) -> None: ...


class PseudoLabels:
    name = "stage1"

    def done(self, ctx: Context) -> bool:
        return ctx.run.stage1.exists() and ctx.run.pseudo_labels.exists()

    def run(self, ctx: Context) -> None:
        pc, meta = ctx.config.pseudo, ctx.labels_meta
        result = pseudo.write_pseudo_labels(from_store(ctx.store, "volume"), ctx.run.pseudo_labels, pc.method,
                                            pc.classes, pc.mask or None, ctx.config.seed, ctx.progress,
                                            meta["voxel_size"], meta["unit"], meta["source_image"])
        if result.curve and ctx.progress:
            print(report.k_curve(result.curve))
        parallel.on_main(lambda: write_json(ctx.run.stage1, result.summary()))


class SparseLabels:
    """The labelled pixels stages 2 and 3 learn: ``--labels`` checked and copied into the
    run, or for a study an oracle's (``sparse.oracle_slices`` slices of the truth)."""

    name = "sparse"

    def done(self, ctx: Context) -> bool:
        return not ctx.has_sparse or ctx.run.sparse.exists()

    def run(self, ctx: Context) -> None:
        def write():
            meta, classes = ctx.labels_meta, ctx.stage1["classes"]
            if ctx.labels is not None:
                found = sparse.copy_labels(ctx.labels.source, ctx.run.sparse_labels, classes, meta)
            else:
                sc = ctx.config.sparse
                found = sparse.oracle_labels(ctx.store, ctx.truth_store, io.open_volume(ctx.run.pseudo_labels),
                                             classes, sc.oracle_slices, sc.sampler, ctx.config.seed,
                                             ctx.run.sparse_labels, meta)
            write_json(ctx.run.sparse, found)

        parallel.on_main(write)


class TrainingStage:
    """A training stage: ``steps`` batches from its dataset, checkpointed and resumable,
    keeping the checkpoints at ``keep_steps`` as well as the latest."""

    name: str

    def __init__(self, keep_steps=()):
        self.keep_steps = frozenset(keep_steps)

    def settings(self, ctx: Context):
        return getattr(ctx.config, self.name)

    def labels(self, ctx: Context):
        """Both stages read the pseudo labels: stage 2 fits them, stage 3 may anchor to them."""
        return io.open_volume(ctx.run.pseudo_labels, "pseudo labels")

    def total_steps(self, ctx: Context) -> int:
        settings = self.settings(ctx)
        return data.batches(ctx.store.shape[0], ctx.config.data.batch_size, settings.epochs, settings.steps)[1]

    def done(self, ctx: Context) -> bool:
        return train.latest_step(ctx.run.checkpoints(self.name)) == self.total_steps(ctx)

    def kind(self, ctx: Context) -> train.StepKind:
        """What this run's compiled step is specialised on (runs of equal kinds share one)."""
        settings = self.settings(ctx)
        return train.StepKind(self.method(ctx), ctx.model, OptimizerSpec.of(settings, self.total_steps(ctx)),
                              ctx.config.loss.name, getattr(settings, "weak_augment", True),
                              getattr(settings, "teacher_views", 1))

    def sparse(self, ctx: Context) -> data.Sparse | None:
        if not ctx.has_sparse:
            return None
        slices = ctx.run.read(ctx.run.sparse)["slices"]
        return data.Sparse(io.open_volume(ctx.run.sparse_labels, "sparse labels"), tuple(slices),
                           ctx.config.sparse.labelled_crops)

    def values(self, ctx: Context) -> dict:
        """What every stage's step reads from its state besides its method's own values."""
        return {"loss": loss_values(ctx.config.loss), **({"supervised": ctx.config.sparse.weight}
                                                         if ctx.has_sparse else {})}

    def member(self, ctx: Context) -> train.Member:
        settings, dc = self.settings(ctx), ctx.config.data
        dataset = data.crop_dataset(ctx.store, self.labels(ctx), dc, ctx.stage1["low"], ctx.stage1["high"],
                                    settings.epochs, self.data_seed(ctx), settings.steps, self.sparse(ctx))
        state = self.initial_state(ctx, make_optimizer(settings, self.total_steps(ctx)))
        return train.Member(state, dataset, ctx.run.checkpoints(self.name), ctx.config.seed)

    def run(self, ctx: Context) -> None:
        self.run_together([ctx], ctx.mesh)

    def run_together(self, contexts: list[Context], mesh, progress: bool | None = None) -> None:
        """Train the runs of ``contexts`` (of one ``population_key``) as one population on
        ``mesh``, or one alone."""
        first = contexts[0]
        train.train(self.name, self.kind(first), [self.member(ctx) for ctx in contexts], mesh,
                    checkpoint_every=first.config.checkpoint_every, read_threads=first.config.data.read_threads,
                    keep_steps=self.keep_steps, progress=first.progress if progress is None else progress)

    def population_key(self, ctx: Context) -> tuple:
        """Runs of equal keys can train as one population: one compiled step, batches of one
        shape, checkpoints at the same steps."""
        dc = ctx.config.data
        return (self.name, self.kind(ctx), self.total_steps(ctx), self.keep_steps, dc.slices, dc.crop,
                dc.batch_size, dc.read_threads, ctx.config.checkpoint_every, ctx.has_sparse)


class Stage2(TrainingStage):
    """Fit the network to the pseudo labels."""

    name = "stage2"

    def method(self, ctx: Context) -> str:
        return "stage2"

    def data_seed(self, ctx: Context) -> int:
        return ctx.config.seed

    def initial_state(self, ctx: Context, optimizer):
        dc = ctx.config.data
        params = train.init_params(ctx.model, dc.slices, dc.crop, ctx.config.seed)
        return train.stage2_state(params, optimizer, self.values(ctx))


class Stage3(TrainingStage):
    """Self-correction from the stage-2 weights, by the method ``stage3.method`` names."""

    name = "stage3"

    def method(self, ctx: Context) -> str:
        return ctx.config.stage3.method

    def data_seed(self, ctx: Context) -> int:
        return ctx.config.seed + 1  # other crops than stage 2's

    def initial_state(self, ctx: Context, optimizer):
        method = train.STAGE3_METHODS[ctx.config.stage3.method]
        values = {**self.values(ctx), **method.values(ctx.config.stage3)}
        return method.init(train.latest_params(ctx.run.checkpoints("stage2")), optimizer, values)


class Predict:
    """Label the whole volume with a trained stage's weights (stage 3 also writes its confidence)."""

    def __init__(self, stage: str):
        self.stage, self.name, self.title = stage, f"predict_{stage}", stage.replace("stage", "stage ")

    def outputs(self, ctx: Context) -> list[Path]:
        run = ctx.run
        if self.stage == "stage2":
            return [run.stage2_labels]
        return [run.net_labels, run.confidence, run.labels] if ctx.config.guard else [run.labels, run.confidence]

    def done(self, ctx: Context) -> bool:
        recorded = ctx.run.predictions.exists() and self.stage in ctx.run.read(ctx.run.predictions)
        return recorded and all(path.exists() for path in self.outputs(ctx))

    def run(self, ctx: Context) -> None:
        """Each process labels its own share of the slices on its own devices."""
        meta, shape = ctx.labels_meta, ctx.store.shape
        params = train.latest_params(ctx.run.checkpoints(self.stage), train.prediction_key(self.stage, ctx.config))
        with contextlib.ExitStack() as outputs:
            labels = outputs.enter_context(io.shared_ome_zarr_writer(
                self.outputs(ctx)[0], shape, np.uint8, name=self.title, labels=ctx.class_names, **meta))
            confidence = None if self.stage == "stage2" else outputs.enter_context(io.shared_ome_zarr_writer(
                ctx.run.confidence, shape, np.uint8, name="confidence", chunks=io.LABEL_CHUNKS,
                attributes={"confidence_scale": io.CONFIDENCE_SCALE},
                voxel_size=meta["voxel_size"], unit=meta["unit"]))
            confidence_sum = predict_volume(model=ctx.model, params=params, volume=ctx.store, low=ctx.stage1["low"],
                           high=ctx.stage1["high"], num_slices=ctx.config.data.slices,
                           batch_size=ctx.config.predict_batch, mesh=ctx.local_mesh, labels_out=labels,
                           confidence_out=confidence,
                           window=ctx.config.data.crop if ctx.config.predict_tiled else None,
                           views=ctx.config.predict_views, precision=ctx.config.predict_precision,
                           progress=ctx.progress, desc=f"predict {self.title}",
                           slices=parallel.share(shape[0]))
        record = {"mean_confidence": float(parallel.summed(confidence_sum) / np.prod(shape))}

        def finish():
            if self.stage == "stage3" and ctx.config.guard:
                record["guard"] = self.guard(ctx)
            recorded = ctx.run.read(ctx.run.predictions) if ctx.run.predictions.exists() else {}
            write_json(ctx.run.predictions, dict(recorded, **{self.stage: record}))

        parallel.on_main(finish)  # the guard streams the whole volume on the main process

    def guard(self, ctx: Context) -> dict:
        """The net's labels through the intensity guard into labels.ome.zarr; what it moved."""
        net = from_store(io.open_volume(ctx.run.net_labels, "stage 3 net labels"), "stage 3 net labels")
        with io.ome_zarr_writer(ctx.run.labels, ctx.store.shape, np.uint8, name=self.title,
                                labels=ctx.class_names, **ctx.labels_meta) as labels:
            return guard_labels(from_store(ctx.store, "volume"), net, labels, ctx.stage1["means"],
                                ctx.config.guard, ctx.config.guard_block, ctx.progress,
                                ctx.config.pseudo.mask or None)


class Summary:
    """metrics.json (written last: it marks the run finished), history.json, panel.png and report.html."""

    name = "summary"

    def done(self, ctx: Context) -> bool:
        return ctx.run.metrics.exists()

    def run(self, ctx: Context) -> None:
        parallel.on_main(lambda: self.summarise(ctx))

    def summarise(self, ctx: Context) -> None:
        run = ctx.run
        records = {stage: train.saved_record(run.checkpoints(stage)) for stage in ("stage2", "stage3")}
        history = {stage: record["history"] for stage, record in records.items()}
        write_json(run.history, history)
        sums3 = records["stage3"].get("sums", {})
        kept_by_class = (np.asarray(sums3["kept_by_class"]) / len(history["stage3"])
                         if "kept_by_class" in sums3 else None)
        metrics = _summarise(ctx, kept_by_class, history)
        metrics["seconds"] = run.read(run.timings)  # every step before this one
        metrics["final_loss"] = {stage: steps[-1]["loss"] for stage, steps in history.items()}
        metrics["stage3_levelled_off"] = levelled_off([step["kept"] for step in history["stage3"]])
        metrics["devices"] = int(ctx.mesh.devices.size)
        write_json(run.metrics, metrics)


AFTER_TRAINING: tuple[Step, ...] = (Predict("stage2"), Predict("stage3"), Summary())
STEPS: tuple[Step, ...] = (PseudoLabels(), SparseLabels(), Stage2(), Stage3(), *AFTER_TRAINING)


def record_time(ctx: Context, step: str, seconds: float) -> None:
    """Add a step's wall time (the main process's) to the run's timings.json."""
    def record():
        timings = ctx.run.read(ctx.run.timings) if ctx.run.timings.exists() else {}
        write_json(ctx.run.timings, dict(timings, **{step: seconds}))

    parallel.on_main(record)


def _summarise(ctx: Context, kept_by_class, history) -> dict:
    run, stage1 = ctx.run, ctx.stage1
    classes, names = stage1["classes"], ctx.class_names
    predictions = {"pseudo": run.pseudo_labels, "stage2": run.stage2_labels, "stage3": run.labels}
    volumes = {key: io.open_volume(path, key) for key, path in predictions.items()}
    if ctx.truth_store is not None:
        volumes["truth"] = ctx.truth_store
    counts = summary.tally(volumes, io.open_volume(run.confidence, "confidence"), progress=ctx.progress)
    metrics = {"classes": classes, "stage1_means": stage1["means"],
               "summary": summary.summarise(counts, classes, names, ctx.voxel_size, ctx.unit, kept_by_class)}
    recorded = run.read(run.predictions)
    metrics["summary"]["stage2_mean_confidence"] = recorded["stage2"]["mean_confidence"]
    if "guard" in recorded["stage3"]:
        metrics["guard"] = recorded["stage3"]["guard"]
    if ctx.truth_store is not None:
        metrics["scoring"] = report.SCORING
        metrics.update(summary.scores(counts, classes))
    _figures(run, ctx.store, volumes, stage1, names, metrics, history)
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
        """Each label volume in the truth's classes, then where stage 3 moved off the pseudo labels."""
        shown, raw = [], {}
        for key, volume in volumes.items():
            raw[key] = io.read(volume[index], key)
            shown.append((titles[key], mappings[key][raw[key]] if key in mappings else raw[key]))
        return shown + [("stage 3 ≠ pseudo labels", raw["stage3"] != raw["pseudo"])]

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
