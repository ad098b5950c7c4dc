"""The three stages end to end in one run directory (``srjax.rundir``), resumable at any point:
the checks, then the steps of ``srjax.stages``.

Everything that can be checked without the long work is checked first: the config's
ranges, the input's format, shape and dtype, the sizes against the volume, the output
path against the inputs, and the run directory against the run it may already hold.
A rerun of a finished run does nothing; a rerun of an unfinished one resumes it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import tensorstore as ts

from srjax import data, io, lockstep, parallel, pseudo, rundir, sparse, stages, train
from srjax.config import Config, validate
from srjax.errors import SrjaxError
from srjax.outputs import check_disjoint
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


def check_inputs(volume: Source, truth: Source | None, config: Config, mesh, labels: Source | None = None) -> None:
    """Shapes, dtypes and sizes that must fit together; needs no voxel reads."""
    io.check_layout(volume.shape, volume.dtype, volume.name)
    if labels is not None:
        sparse.check_layout(labels, volume.shape, labels.name)
        if config.sparse.oracle_slices:
            raise SrjaxError("--labels and sparse.oracle_slices both label pixels; give one of them")
    if config.sparse.oracle_slices:
        if truth is None:
            raise SrjaxError("sparse.oracle_slices labels slices from the ground truth; pass --truth")
        if config.sparse.oracle_slices > volume.shape[0]:
            raise SrjaxError(f"sparse.oracle_slices={config.sparse.oracle_slices} is more than the volume's "
                             f"{volume.shape[0]} slices")
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


@contextlib.contextmanager
def opened_run(volume, out: str | Path, config: Config, truth=None, *, preset: str | None = None,
               dataset: str | None = None, truth_dataset: str | None = None, voxel_size=None,
               unit: str | None = None, fill_missing: bool = False, devices=None, progress: bool = True,
               labels=None):
    """The checked inputs and claimed run directory ``out`` of one run, as the steps'
    ``stages.Context``; the directory is held until the block ends. ``labels``: sparse
    labels (``srjax.sparse``) stages 2 and 3 learn."""
    validate(config)
    mesh = train.make_mesh(devices)
    volume = Input(volume, "volume", dataset, fill_missing)
    truth = None if truth is None else Input(truth, "truth", truth_dataset, fill_missing)
    labels = None if labels is None else Input(labels, "labels", None, fill_missing)
    check_inputs(volume.source, truth and truth.source, config, mesh, labels and labels.source)
    size, unit = voxel_size_and_unit(volume.source, voxel_size, unit)
    out = io.local_path(out)
    check_disjoint(out, {"volume": volume.path, "truth": truth and truth.path, "labels": labels and labels.path})
    fingerprints = {"volume": rundir.fingerprint(volume.source, volume.path),
                    "truth": None if truth is None else rundir.fingerprint(truth.source, truth.path)}
    if labels is not None:
        fingerprints["labels"] = rundir.fingerprint(labels.source, labels.path)
    with contextlib.ExitStack() as held:
        # The main process holds the run directory; the others use it once it has.
        parallel.on_main(lambda: held.enter_context(rundir.claim(out, config, fingerprints, preset)))
        yield stages.Context(rundir.RunDir(out), config, volume, truth, mesh, size, unit,
                             progress and parallel.is_main(), labels)


def run_pipeline(volume, out: str | Path, config: Config, truth=None, steps=stages.STEPS, **options) -> dict:
    """Segment ``volume`` (a path in any format, an array or a TensorStore) into the run
    directory ``out`` by ``steps``; ``options`` are those of ``opened_run``. Returns what
    metrics.json holds."""
    with opened_run(volume, out, config, truth, **options) as ctx:
        if not ctx.run.finished:
            lockstep.run_runs([(ctx, steps)], populations=False, progress=ctx.progress)
        return ctx.run.read(ctx.run.metrics)
