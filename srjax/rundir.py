"""A run directory: every path and record of a run, and the rules for using one.

A run directory belongs to one run: one config (up to settings that cannot change
results) and one input, identified by its fingerprint (path, shape, dtype and a
content hash of a few slices; the same for the ground truth). A rerun with the same
config and input resumes or, if finished, does nothing; anything else is refused
with the keys or inputs that differ. One process at a time holds a run directory.

Layout (volumes are OME-Zarr; label volumes are OME-Zarr label images):
  run.json                   srjax version, preset, input fingerprints, where the volume is read
  config.json                the resolved config
  volume.ome.zarr            the imported input, when it was not a Zarr/N5 store
  truth.ome.zarr             the imported ground truth, likewise
  stage1.json                voxel range, clustering and class means of the pseudo labels
  pseudo_labels.ome.zarr     stage-1 labels
  sparse_labels.ome.zarr, sparse.json   labelled pixels (--labels, or an oracle), when given
  checkpoints/stage2/, checkpoints/stage3/   orbax checkpoints (state, data iterator, history)
  stage2_labels.ome.zarr     stage-2 prediction
  labels.ome.zarr            stage-3 prediction (the teacher's, through the intensity guard when it is on)
  net_labels.ome.zarr        the teacher's own prediction, when the guard is on
  confidence.ome.zarr        the teacher's max class probability per voxel, uint8 (probability x 255)
  predictions.json           the mean max class probability of each stage's prediction, what the guard moved
  history.json               per-step losses of stages 2 and 3
  timings.json               wall time of every step
  metrics.json               summary, warnings, scores (with ground truth), timings; written last
  panel.png, report.html     what a person looks at
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import numpy as np

from srjax import __version__
from srjax.config import Config, differences, to_dict
from srjax.errors import SrjaxError
from srjax.outputs import absolute, check_parent_writable, exclusive, write_json
from srjax.sources import Source

FINGERPRINT_SLICES = 5


class RunDir:
    """The paths of one run directory."""

    def __init__(self, root: str | Path):
        self.root = absolute(root)
        r = self.root
        self.record, self.config = r / "run.json", r / "config.json"
        self.volume, self.truth = r / "volume.ome.zarr", r / "truth.ome.zarr"
        self.stage1, self.pseudo_labels = r / "stage1.json", r / "pseudo_labels.ome.zarr"
        self.stage2_labels, self.labels, self.confidence = (
            r / "stage2_labels.ome.zarr", r / "labels.ome.zarr", r / "confidence.ome.zarr")
        self.history, self.metrics, self.timings = r / "history.json", r / "metrics.json", r / "timings.json"
        self.predictions, self.net_labels = r / "predictions.json", r / "net_labels.ome.zarr"
        self.panel, self.report = r / "panel.png", r / "report.html"
        self.sparse_labels, self.sparse = r / "sparse_labels.ome.zarr", r / "sparse.json"
        self.lock = r / ".srjax.lock"

    def checkpoints(self, stage: str) -> Path:
        return self.root / "checkpoints" / stage

    def read(self, path: Path):
        return json.loads(path.read_text())

    def record_read_from(self, volume: Path | None, truth: Path | None) -> None:
        """Note in run.json the stores the run reads, for tools that revisit it (srjax explain)."""
        record = self.read(self.record)
        record["read_from"] = {"volume": volume and str(volume), "truth": truth and str(truth)}
        write_json(self.record, record)

    @property
    def finished(self) -> bool:
        return self.metrics.exists()


def fingerprint(source: Source, path: Path | None) -> dict:
    """What identifies an input: its path, shape, dtype and a hash of a few evenly spaced slices."""
    depth = source.shape[0]
    zs = sorted({int(z) for z in np.linspace(0, depth - 1, min(depth, FINGERPRINT_SLICES)).round()})
    digest = hashlib.sha256()
    for z in zs:
        digest.update(np.ascontiguousarray(source.read(z, z + 1)).tobytes())
    return {"path": None if path is None else str(absolute(path)), "shape": list(source.shape),
            "dtype": np.dtype(source.dtype).str, "sha256": digest.hexdigest(), "hashed_slices": zs}


def _input_differences(old: dict, new: dict) -> list[str]:
    found = []
    for name in ("volume", "truth", "labels"):
        before, after = old.get(name), new.get(name)
        if before is None and after is None:
            continue
        if (before is None) != (after is None):
            found.append(f"{name}: {'none' if before is None else before['path'] or 'an array'} -> "
                         f"{'none' if after is None else after['path'] or 'an array'}")
            continue
        for key, what in (("shape", "shape"), ("dtype", "dtype"), ("sha256", "content")):
            if before[key] != after[key]:
                found.append(f"{name} {before['path'] or 'array'} -> {after['path'] or 'array'}: {what} differs")
                break
    return found


def _is_empty_dir(path: Path) -> bool:
    """Empty but for the lock of a run that is starting in it."""
    return path.is_dir() and all(entry.name == ".srjax.lock" for entry in path.iterdir())


@contextlib.contextmanager
def claim(root: str | Path, config: Config, inputs: dict, preset: str | None = None):
    """Hold the run directory ``root`` for this config and these input fingerprints.

    A new or empty directory becomes this run's; a directory of the same run is
    resumed; a run of another config or input, a file, or a directory srjax did not
    make is refused, all before anything is written.
    """
    run = RunDir(root)
    path = run.root
    if path.exists() and not path.is_dir():
        raise SrjaxError(f"--out {path} is a file; pass a directory for the run")
    if path.is_dir() and not _is_empty_dir(path) and not run.record.exists():
        raise SrjaxError(f"--out {path} holds files that are not an srjax run; srjax uses only an empty or new "
                         "directory, or one of its own runs: choose another --out")
    check_parent_writable(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SrjaxError(f"--out {path} cannot be created: {err.strerror}") from None
    with exclusive(run.lock, f"run directory {path}"):
        record = {"srjax": __version__, "preset": preset, **inputs}
        if run.record.exists():
            old = run.read(run.record)
            changed = _input_differences(old, inputs)
            if changed:
                raise SrjaxError(f"{path} holds a run of another input ({'; '.join(changed)}); "
                                 "pass a new --out for this one")
            keys = differences(run.read(run.config), config)
            if keys:
                raise SrjaxError(f"{path} holds a run with a different config ({'; '.join(keys)}); "
                                 "pass a new --out, or the same settings to resume it")
            record = {**old, **record, "preset": old.get("preset") if preset is None else preset}
        write_json(run.config, to_dict(config))
        write_json(run.record, record)
        yield run


def open_run(root: str | Path) -> tuple[RunDir, Config, dict]:
    """An existing run directory (for tools that revisit a run): its paths, config and record."""
    from srjax.config import from_dict

    run = RunDir(root)
    if not run.record.exists() or not run.config.exists():
        raise SrjaxError(f"{run.root} is not an srjax run directory (no run.json and config.json)")
    return run, from_dict(run.read(run.config), source=str(run.config)), run.read(run.record)
