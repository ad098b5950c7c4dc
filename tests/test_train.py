"""Pure steps, EMA, data parallelism across simulated devices, and resuming."""

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from srjax import config as cfg
from srjax import presets
from srjax import data, train
from srjax.losses import pixel_loss
from srjax.models import build_model
from conftest import read_all


def test_ema_update_by_hand():
    teacher = {"w": jnp.array([1.0, 2.0]), "b": {"c": jnp.array(4.0)}}
    student = {"w": jnp.array([3.0, 0.0]), "b": {"c": jnp.array(0.0)}}
    out = train.ema_update(teacher, student, 0.9)
    np.testing.assert_allclose(out["w"], [0.9 * 1 + 0.1 * 3, 0.9 * 2])
    np.testing.assert_allclose(out["b"]["c"], 3.6)


def _run_both_stages(tmp_path, devices, volume, labels):
    config = presets.tiny()
    dc = config.data
    model = build_model(config.model.name, 4, config.model.width, config.model.dropout)
    loss_fn = pixel_loss(config.loss)
    mesh = train.make_mesh(devices)
    params = train.init_params(model, dc.slices, dc.crop, 0)
    opt = optax.adam(1e-3)
    state = train.stage2_state(params, opt)
    common = dict(seed=0, checkpoint_every=100, read_threads=1, progress=False)
    ds = data.crop_dataset(volume, labels, dc, float(volume.min()), float(volume.max()), 2, 0)
    fitted, h2, _ = train.train("stage2", train.bind_stage2_step(model, opt, loss_fn, config.stage2), state, ds,
                                mesh, tmp_path / "s2", **common)
    state = train.teacher_student_state(fitted.params, opt)
    ds = data.crop_dataset(volume, None, dc, float(volume.min()), float(volume.max()), 2, 1)
    stage3 = cfg.Stage3Config(confidence=0.3, ema=0.9)
    step = train.bind_stage3_step(model, opt, loss_fn, stage3)
    corrected, h3, _ = train.train("stage3", step, state, ds, mesh, tmp_path / "s3", **common)
    return jax.device_get(corrected), h2 + h3


def test_one_device_and_four_devices_agree(tmp_path, tiny_phantom):
    assert jax.device_count() == 4, "conftest sets four simulated CPU devices"
    volume, labels = tiny_phantom
    one, h1 = _run_both_stages(tmp_path / "one", jax.devices()[:1], volume, labels.astype(np.int32) % 4)
    four, h4 = _run_both_stages(tmp_path / "four", jax.devices(), volume, labels.astype(np.int32) % 4)
    np.testing.assert_allclose([h["loss"] for h in h1], [h["loss"] for h in h4], rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(four)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _run_cli(root, out, *extra):
    cmd = [sys.executable, "-m", "srjax.cli", "run", str(root / "volume.npy"), "--classes", "4",
           "--out", str(out), "--config", str(root / "tiny.json"), "--set", "stage2.epochs=6",
           "--set", "stage3.epochs=3", *extra]
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    return cmd, env


def _final_weights(out):
    directory = out / "checkpoints" / "stage3"
    step = max(int(p.name) for p in directory.iterdir() if p.name.isdigit())
    return ocp.StandardCheckpointer().restore((directory / str(step) / "state").absolute())


def test_killed_run_resumes_to_the_same_weights(tmp_path, tiny_files):
    cmd, env = _run_cli(tiny_files, tmp_path / "straight")
    subprocess.run(cmd, env=env, check=True, capture_output=True)

    cmd, env = _run_cli(tiny_files, tmp_path / "killed")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = tmp_path / "killed" / "checkpoints" / "stage2" / "4"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "killed" / "metrics.json").exists()
    subprocess.run(cmd, env=env, check=True, capture_output=True)

    straight, resumed = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "killed")
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    for name in ("labels.ome.zarr", "confidence.ome.zarr", "pseudo_labels.ome.zarr"):
        np.testing.assert_array_equal(read_all(tmp_path / "straight" / name), read_all(tmp_path / "killed" / name))


def test_batch_not_divisible_by_devices_is_refused(tmp_path, tiny_phantom):
    from srjax.errors import SrjaxError
    from srjax.pipeline import run_pipeline

    volume, _ = tiny_phantom
    config = cfg.apply_overrides(presets.tiny(), ["data.batch_size=6"])
    with pytest.raises(SrjaxError, match="multiple of the 4 devices"):
        run_pipeline(volume, tmp_path / "out", config, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_step_budget_draws_the_same_crops_as_epochs_would(tiny_phantom):
    volume, labels = tiny_phantom
    dc = presets.tiny().data
    by_epochs = data.crop_dataset(volume, labels, dc, 0.0, 1.0, 3, 0)
    by_steps = data.crop_dataset(volume, labels, dc, 0.0, 1.0, 1, 0, steps=5)
    assert len(by_epochs) == 3 * 8 // 4 and len(by_steps) == 5
    for i in range(5):
        np.testing.assert_array_equal(by_steps[i]["image"], by_epochs[i]["image"])
