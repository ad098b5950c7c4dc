"""Sparse labels in stages 2 and 3: an oracle's slices from the truth, a labels file
checked and copied, the supervised term in each stage's step, and bad input."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srjax import config as cfg
from srjax import io, presets, train
from srjax.cli import main
from srjax.losses import loss_values, pixel_loss
from srjax.models import build_model
from srjax.optim import OptimizerSpec, optimizer_from
from srjax.errors import SrjaxError
from srjax.pipeline import run_pipeline
from srjax.sparse import UNLABELLED, truth_to_classes


@pytest.fixture(scope="module")
def oracle_run(tmp_path_factory, tiny_files):
    config = cfg.apply_overrides(presets.tiny(), ["sparse.oracle_slices=8", "sparse.weight=5"])
    out = tmp_path_factory.mktemp("sparse") / "oracle"
    run_pipeline(tiny_files / "volume.npy", out, config, truth=tiny_files / "truth.npy", progress=False)
    return out


def test_the_oracle_labels_its_slices_from_the_truth(oracle_run, tiny_files):
    out = oracle_run
    record = json.loads((out / "sparse.json").read_text())
    assert record["slices"] == list(range(8)) and record["pixels"] == 8 * 48 * 48
    truth = np.load(tiny_files / "truth.npy")
    mapping = truth_to_classes(io.as_volume(truth), io.open_volume(out / "pseudo_labels.ome.zarr"), 4)
    np.testing.assert_array_equal(io.open_volume(out / "sparse_labels.ome.zarr").read().result(), mapping[truth])


def _tiny_step_setup():
    model = build_model("unet", 3, "tiny", 0.0)
    images = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
    params = model.init(jax.random.key(1), images[:1])["params"]
    pseudo = jax.random.randint(jax.random.key(3), (4, 32, 32), 0, 3)
    true = jax.random.randint(jax.random.key(4), (4, 32, 32), 0, 3)
    return model, params, images, pseudo, true


def _loss(step, state, batch, model, optimizer):
    extra = {"weak_augment": False} if step is train.stage2_step else {}
    bound = jax.jit(functools.partial(step, model=model, optimizer=optimizer, loss_fn=pixel_loss("label_smoothing"),
                                      **extra))
    return float(bound(state, batch, jax.random.key(2))[1]["loss"])


def test_stage_2_learns_labelled_pixels_from_their_labels_and_the_rest_from_the_pseudo_labels():
    model, params, images, pseudo, true = _tiny_step_setup()
    optimizer = optimizer_from(OptimizerSpec.of(cfg.Stage2Config(), 1), 1e-3)
    values = {"loss": loss_values(cfg.LossConfig()), "supervised": 2.0}
    state = train.stage2_state(params, optimizer, values)
    logits = model.apply({"params": params}, images, train=False)
    ce = pixel_loss("label_smoothing")
    everywhere = {"image": images, "label": pseudo, "sparse": true}
    assert _loss(train.stage2_step, state, everywhere, model, optimizer) == pytest.approx(
        2.0 * float(ce(logits, true, values["loss"]).mean()), rel=1e-5)
    nowhere = {"image": images, "label": pseudo, "sparse": jnp.full_like(true, UNLABELLED)}
    plain = {"image": images, "label": pseudo}
    assert _loss(train.stage2_step, state, nowhere, model, optimizer) == pytest.approx(
        _loss(train.stage2_step, state, plain, model, optimizer), rel=1e-6)


def test_stage_3_keeps_the_teacher_and_the_anchor_off_labelled_pixels():
    model, params, images, pseudo, true = _tiny_step_setup()
    optimizer = optimizer_from(OptimizerSpec.of(cfg.Stage3Config(), 1), 1e-3)
    values = {"loss": loss_values(cfg.LossConfig()), **train.unbiased_teacher_values(cfg.Stage3Config()),
              "supervised": 0.0}
    state = train.teacher_student_state(params, optimizer, values)
    everywhere = {"image": images, "label": pseudo, "sparse": true}
    assert _loss(train.unbiased_teacher_step, state, everywhere, model, optimizer) == 0.0
    nowhere = {"image": images, "label": pseudo, "sparse": jnp.full_like(true, UNLABELLED)}
    plain = {"image": images, "label": pseudo}
    assert _loss(train.unbiased_teacher_step, state, nowhere, model, optimizer) == pytest.approx(
        _loss(train.unbiased_teacher_step, state, plain, model, optimizer), rel=1e-6)


def test_a_labels_file_is_checked_and_copied(tmp_path, tiny_files, capsys):
    volume = np.load(tiny_files / "volume.npy")
    labels = np.full(volume.shape, UNLABELLED, np.uint8)
    labels[3, 10:20, 10:20] = 1
    np.save(tmp_path / "labels.npy", labels)
    out = tmp_path / "run"
    run = ["run", str(tiny_files / "volume.npy"), "--classes", "4", "--preset", "tiny", "--out"]
    assert main([*run, str(out), "--labels", str(tmp_path / "labels.npy")]) == 0
    assert json.loads((out / "sparse.json").read_text())["slices"] == [3]
    np.testing.assert_array_equal(io.open_volume(out / "sparse_labels.ome.zarr").read().result(), labels)
    bad = {"shape": labels[:4], "value": np.where(labels == 1, 9, labels).astype(np.uint8),
           "empty": np.full(volume.shape, UNLABELLED, np.uint8), "dtype": labels.astype(np.float32)}
    words = {"shape": "has shape", "value": "holds 9", "empty": "labels no pixel", "dtype": "has dtype"}
    for name, array in bad.items():
        np.save(tmp_path / f"{name}.npy", array)
        assert main([*run, str(tmp_path / name), "--labels", str(tmp_path / f"{name}.npy")]) == 2
        assert words[name] in capsys.readouterr().err


def test_an_oracle_needs_the_truth_and_no_labels_file(tiny_files):
    config = cfg.apply_overrides(presets.tiny(), ["sparse.oracle_slices=2"])
    with pytest.raises(SrjaxError, match="pass --truth"):
        run_pipeline(tiny_files / "volume.npy", tiny_files / "never", config, progress=False)
    with pytest.raises(SrjaxError, match="give one of them"):
        run_pipeline(tiny_files / "volume.npy", tiny_files / "never", config, truth=tiny_files / "truth.npy",
                     labels=tiny_files / "truth.npy", progress=False)
    with pytest.raises(SrjaxError, match="more than the volume"):
        run_pipeline(tiny_files / "volume.npy", tiny_files / "never",
                     cfg.apply_overrides(presets.tiny(), ["sparse.oracle_slices=9"]), truth=tiny_files / "truth.npy",
                     progress=False)
    assert not (tiny_files / "never").exists()
