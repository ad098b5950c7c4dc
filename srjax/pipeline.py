"""The three stages end to end in one output directory, resumable at any point.

Layout of ``out`` (volumes are OME-Zarr images, viewable in napari as they are):
  config.json                the resolved config of the run
  inputs.json                where the volume and truth were read from (written by the CLI)
  stage1.json                voxel range, clustering and class means of the pseudo labels
  pseudo_labels.ome.zarr     stage 1 labels
  checkpoints/stage2/        orbax checkpoints (state + data iterator + loss history)
  checkpoints/stage3/
  stage2_labels.ome.zarr     stage-2 model prediction
  labels.ome.zarr            stage-3 (teacher) prediction
  confidence.ome.zarr        teacher's max class probability per voxel
  history.json               per-step losses of stages 2 and 3
  metrics.json               scores (when ground truth is given), timings, class means
  panel.png                  slice | pseudo | stage 2 | stage 3 | truth

Every file appears under its name only once complete; a rerun of the same command
skips what is done and resumes training from the last checkpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np
import optax

from srjax import data, io, pseudo, report, train
from srjax.config import Config, to_dict
from srjax.errors import SrjaxError
from srjax.io import atomic_path, check_volume, ome_zarr_writer
from srjax.losses import pixel_loss
from srjax.metrics import confusion, score
from srjax.models import build_model
from srjax.predict import predict_volume
from srjax.sources import from_store


def write_json(path: Path, payload) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")


def _claim_directory(out: Path, config: Config) -> None:
    """Create ``out`` for this config, or accept it if it holds a run of the same config."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    if path.exists():
        if json.loads(path.read_text()) != to_dict(config):
            raise SrjaxError(f"{out} holds a run with a different config; pass a new --out or delete {out}")
    else:
        write_json(path, to_dict(config))


def _check_inputs(volume, truth, config: Config, mesh, volume_name: str, truth_name: str) -> None:
    check_volume(volume, volume_name)
    if truth is not None:
        check_volume(truth, truth_name)
        if tuple(truth.shape) != tuple(volume.shape):
            raise SrjaxError(f"{truth_name} has shape {tuple(truth.shape)} but the volume is {tuple(volume.shape)}")
        if io.numpy_dtype(truth).kind not in "ui":
            raise SrjaxError(f"{truth_name} has dtype {io.numpy_dtype(truth)}; ground-truth labels must be integers")
    if config.data.batch_size % mesh.devices.size:
        raise SrjaxError(
            f"data.batch_size={config.data.batch_size} is not a multiple of the {mesh.devices.size} devices; change it"
        )
    check_config(config)


def check_config(config: Config) -> None:
    """Names and counts in the config that need no data, checked before any work starts."""
    build_model(config.model.name, 2, config.model.width)
    pixel_loss(config.loss)
    pseudo.check_method(config.pseudo.method)
    for stage in (config.stage2, config.stage3):
        if stage.epochs < 1:
            raise SrjaxError("stage2.epochs and stage3.epochs must be at least 1")


def _stage1(volume, out: Path, config: Config, volume_name: str, progress: bool, meta: dict) -> dict:
    info_path, labels_path = out / "stage1.json", out / "pseudo_labels.ome.zarr"
    if info_path.exists() and labels_path.exists():
        return json.loads(info_path.read_text())
    pc = config.pseudo
    info = pseudo.write_pseudo_labels(from_store(volume, volume_name), labels_path, pc.method, pc.classes,
                                      pc.mask or None, config.seed, progress, **meta).summary()
    write_json(info_path, info)
    return info


def run_pipeline(
    volume,
    out: str | Path,
    config: Config,
    truth=None,
    devices=None,
    progress: bool = True,
    volume_name: str = "volume",
    truth_name: str = "truth",
    voxel_size=None,
    unit: str | None = None,
) -> dict:
    """Segment ``volume`` (a TensorStore or an array) into ``out``; returns what metrics.json holds."""
    out = Path(out)
    volume = io.as_volume(volume)
    truth = None if truth is None else io.as_volume(truth)
    meta = {"voxel_size": voxel_size, "unit": unit}
    mesh = train.make_mesh(devices)
    _check_inputs(volume, truth, config, mesh, volume_name, truth_name)
    _claim_directory(out, config)
    timings = {}

    start = time.perf_counter()
    stage1 = _stage1(volume, out, config, volume_name, progress, meta)
    timings["stage1"] = time.perf_counter() - start
    low, high = stage1["low"], stage1["high"]
    pseudo_labels = io.open_volume(out / "pseudo_labels.ome.zarr", "pseudo labels")

    classes, dc = stage1["classes"], config.data
    model = build_model(config.model.name, classes, config.model.width, config.model.dropout)
    loss_fn = pixel_loss(config.loss)
    params = train.init_params(model, dc.slices, dc.crop, config.seed)
    common = dict(seed=config.seed, checkpoint_every=config.checkpoint_every, read_threads=dc.read_threads)

    start = time.perf_counter()
    optimizer = optax.adam(config.stage2.learning_rate)
    state = train.FitState(step=jax.numpy.zeros((), jax.numpy.int32), params=params, opt_state=optimizer.init(params))
    dataset = data.crop_dataset(volume, pseudo_labels, dc, low, high, config.stage2.epochs, config.seed)
    state2, history2 = train.train(
        "stage 2",
        train.bind_fit_step(model, optimizer, loss_fn, config.stage2),
        state,
        dataset,
        mesh,
        out / "checkpoints" / "stage2",
        progress=progress,
        **common,
    )
    timings["stage2"] = time.perf_counter() - start

    start = time.perf_counter()
    # Stage 3 starts from the stage-2 checkpoint on disk, not from memory.
    stage2_params = train.restore_state(out / "checkpoints" / "stage2", state2, mesh)[0].params
    optimizer = optax.adam(config.stage3.learning_rate)
    state = train.CorrectState(
        step=jax.numpy.zeros((), jax.numpy.int32),
        params=stage2_params,
        opt_state=optimizer.init(stage2_params),
        teacher=jax.tree.map(jax.numpy.copy, stage2_params),  # own buffers: the step donates both
    )
    dataset = data.crop_dataset(volume, None, dc, low, high, config.stage3.epochs, config.seed + 1)
    state3, history3 = train.train(
        "stage 3",
        train.bind_correct_step(model, optimizer, loss_fn, config.stage3),
        state,
        dataset,
        mesh,
        out / "checkpoints" / "stage3",
        progress=progress,
        **common,
    )
    timings["stage3"] = time.perf_counter() - start
    write_json(out / "history.json", {"stage2": history2, "stage3": history3})

    start = time.perf_counter()
    predict = dict(
        model=model, volume=volume, low=low, high=high, num_slices=dc.slices,
        batch_size=config.predict_batch, mesh=mesh, progress=progress,
    )
    outputs = dict(chunks=io.LABEL_CHUNKS, **meta)
    with ome_zarr_writer(out / "stage2_labels.ome.zarr", volume.shape, np.uint8, name="stage 2", **outputs) as labels:
        predict_volume(params=state2.params, labels_out=labels, desc="predict stage 2", **predict)
    with (
        ome_zarr_writer(out / "labels.ome.zarr", volume.shape, np.uint8, name="stage 3", **outputs) as labels,
        ome_zarr_writer(out / "confidence.ome.zarr", volume.shape, np.float32, name="confidence", **outputs) as conf,
    ):
        mean_confidence = predict_volume(params=state3.teacher, labels_out=labels, confidence_out=conf,
                                         desc="predict stage 3", **predict)
    timings["predict"] = time.perf_counter() - start

    predictions = {
        "pseudo": pseudo_labels,
        "stage2": io.open_volume(out / "stage2_labels.ome.zarr", "stage-2 labels"),
        "stage3": io.open_volume(out / "labels.ome.zarr", "labels"),
    }
    metrics = {
        "classes": classes,
        "stage1_means": stage1["means"],
        "devices": int(mesh.devices.size),
        "final_loss": {"stage2": history2[-1]["loss"], "stage3": history3[-1]["loss"]},
        "mean_confidence": mean_confidence,
        "seconds": timings,
    }
    z = volume.shape[0] // 2
    columns = {key: io.read(pred[z], key) for key, pred in predictions.items()}
    num_colours = classes
    if truth is not None:
        num_true = int(max(io.read(truth[i], truth_name).max() for i in range(truth.shape[0]))) + 1
        metrics["scoring"] = "pixel accuracy and mIoU exclude background class 0; predicted ids are matched to true classes by maximum overlap, one-to-one unless K exceeds the true class count, then many-to-one"
        for key, pred in predictions.items():
            metrics[key] = score(confusion(pred, truth, classes, num_true))
            columns[key] = np.asarray(metrics[key]["mapping"])[columns[key]]
        columns["truth"] = io.read(truth[z], truth_name)
        num_colours = num_true
    titles = {"pseudo": "pseudo label", "stage2": "stage 2", "stage3": "stage 3", "truth": "ground truth"}
    report.panel(
        out / "panel.png",
        data.normalise(io.read(volume[z], volume_name), low, high),
        [(titles[key], labels) for key, labels in columns.items()],
        num_colours,
        f"slice {z}" + (" (predictions matched to true classes by maximum overlap)" if truth is not None else ""),
    )
    write_json(out / "metrics.json", metrics)
    return metrics
