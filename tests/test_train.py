"""Pure steps, EMA, data parallelism across simulated devices, and resuming."""

import dataclasses
import functools
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from srjax import config as cfg
from srjax import presets
from srjax import augment, data, train
from srjax.losses import loss_values
from srjax.models import build_model
from srjax.optim import OptimizerSpec, optimizer_from
from conftest import read_all, subprocess_env


def test_ema_update_by_hand():
    teacher = {"w": jnp.array([1.0, 2.0]), "b": {"c": jnp.array(4.0)}}
    student = {"w": jnp.array([3.0, 0.0]), "b": {"c": jnp.array(0.0)}}
    out = train.ema_update(teacher, student, 0.9)
    np.testing.assert_allclose(out["w"], [0.9 * 1 + 0.1 * 3, 0.9 * 2])
    np.testing.assert_allclose(out["b"]["c"], 3.6)


def _run_both_stages(tmp_path, devices, volume, labels):
    config = presets.tiny()
    dc, loss = config.data, config.loss.name
    model = build_model(config.model.name, 4, config.model.width, config.model.dropout)
    mesh = train.make_mesh(devices)
    params = train.init_params(model, dc.slices, dc.crop, 0)
    values = {"loss": loss_values(config.loss)}
    common = dict(checkpoint_every=100, read_threads=1, progress=False)
    ds = data.crop_dataset(volume, labels, dc, float(volume.min()), float(volume.max()), 2, 0)
    spec = OptimizerSpec.of(config.stage2, len(ds))
    state = train.stage2_state(params, optimizer_from(spec, 1e-3), values)
    [(fitted, h2, _)] = train.train("stage2", train.StepKind("stage2", model, spec, loss),
                                    [train.Member(state, ds, tmp_path / "s2", 0)], mesh, **common)
    ds = data.crop_dataset(volume, labels, dc, float(volume.min()), float(volume.max()), 2, 1)
    stage3 = cfg.Stage3Config(confidence=0.3, ema=0.9)
    spec = OptimizerSpec.of(stage3, len(ds))
    state = train.teacher_student_state(fitted.params, optimizer_from(spec, 1e-3),
                                        {**values, **train.unbiased_teacher_values(stage3)})
    [(corrected, h3, _)] = train.train("stage3", train.StepKind("unbiased_teacher", model, spec, loss),
                                       [train.Member(state, ds, tmp_path / "s3", 0)], mesh, **common)
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
    env = subprocess_env()
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


def test_class_crops_find_a_rare_class_that_random_crops_miss():
    """One 2x2 speck of class 1 in 8 slices of 64x64: a random 16-pixel crop holds it about a
    sixteenth of the time; with every crop class-centred, half of them are on it (two classes)."""
    volume = np.zeros((8, 64, 64), np.float32)
    labels = np.zeros((8, 64, 64), np.uint8)
    labels[:, 60:62, 1:3] = 1  # at the border: the crop is clamped inside the slice
    dc = cfg.DataConfig(slices=1, crop=16, batch_size=8, read_threads=1)
    def share(class_crops):
        ds = data.crop_dataset(volume, labels, dataclasses.replace(dc, class_crops=class_crops), 0.0, 1.0, 40, 0)
        return np.mean([(batch["label"] == 1).any(axis=(1, 2)).mean() for batch in ds])
    assert share(0.0) < 0.1
    assert 0.4 < share(1.0) < 0.6
    assert share(0.5) == pytest.approx(share(0.0) / 2 + share(1.0) / 2, abs=0.05)
    rng = np.random.default_rng(0)
    assert {data.class_centred_origin(labels[0], 16, rng) for _ in range(40)} >= {(48, 0)}


def _stage3_member(tmp_path, model, params, phantom, config, seed: int, learning_rate: float, confidence: float,
                   smoothing: float, ema: float):
    """A stage-3 run of the tiny phantom whose settings are all values: seed, learning rate, δ, α and ε."""
    dc, (volume, labels) = config.data, phantom
    ds = data.crop_dataset(volume, labels % 4, dc, float(volume.min()), float(volume.max()), 2, seed)
    stage3 = cfg.Stage3Config(confidence=confidence, ema=ema, learning_rate=learning_rate)
    loss = cfg.LossConfig(smoothing=smoothing)
    values = {"loss": loss_values(loss), **train.unbiased_teacher_values(stage3)}
    spec = OptimizerSpec.of(stage3, len(ds))
    state = train.teacher_student_state(params, optimizer_from(spec, learning_rate), values)
    kind = train.StepKind("unbiased_teacher", model, spec, loss.name)
    return kind, train.Member(state, ds, tmp_path / f"seed{seed}", seed)


MEMBERS = [dict(seed=0, learning_rate=1e-3, confidence=0.3, smoothing=0.1, ema=0.9),
           dict(seed=1, learning_rate=3e-3, confidence=0.5, smoothing=0.0, ema=0.99)]


def test_a_population_member_ends_where_it_ends_alone(tmp_path, tiny_phantom):
    """Two stage-3 runs that differ in every value train as one vmapped population on a
    2 x 2 (population x data) mesh; each ends with the weights, teacher and history it
    gets alone on a 2-device data mesh, and is saved in its own resumable directory."""
    config = presets.tiny()
    model = build_model(config.model.name, 4, config.model.width, config.model.dropout)
    params = jax.device_get(train.init_params(model, config.data.slices, config.data.crop, 0))  # never donated
    common = dict(checkpoint_every=100, read_threads=1, progress=False)
    built = [_stage3_member(tmp_path / "together", model, params, tiny_phantom, config, **m) for m in MEMBERS]
    kinds = {kind for kind, _ in built}
    assert len(kinds) == 1  # the values differ, the compiled step does not
    mesh = train.population_mesh(2)
    assert dict(mesh.shape) == {"population": 2, "data": 2}
    together = train.train("stage3", kinds.pop(), [member for _, member in built], mesh, **common)
    for (kind, member), (state, history, sums) in zip(built, together):
        _, alone_member = _stage3_member(tmp_path / "alone", model, params, tiny_phantom, config,
                                         **MEMBERS[member.seed])
        # Alone on as many devices as a member gets in the population: the same per-device batch.
        data_mesh = train.make_mesh(jax.devices()[:mesh.shape["data"]])
        [(alone, alone_history, alone_sums)] = train.train("stage3", kind, [alone_member], data_mesh, **common)
        np.testing.assert_allclose([h["loss"] for h in history], [h["loss"] for h in alone_history],
                                   rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(sums["kept_by_class"], alone_sums["kept_by_class"], rtol=1e-4, atol=1e-6)
        for a, b in zip(jax.tree.leaves(jax.device_get(state)), jax.tree.leaves(jax.device_get(alone)), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        assert train.latest_step(member.checkpoint_dir) == len(member.dataset)
        saved = train.latest_params(member.checkpoint_dir, "teacher")
        for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(jax.device_get(state.teacher)), strict=True):
            np.testing.assert_array_equal(a, b)


def test_runs_that_differ_only_in_values_share_one_compiled_step(tmp_path, tiny_phantom):
    config = presets.tiny()
    model = build_model(config.model.name, 4, config.model.width, config.model.dropout)
    params = jax.device_get(train.init_params(model, config.data.slices, config.data.crop, 0))  # never donated
    mesh = train.make_mesh()
    train.compiled_step.cache_clear()  # other tests compile the same kind for batches of another structure
    for index, member in enumerate(MEMBERS):
        kind, built = _stage3_member(tmp_path / str(index), model, params, tiny_phantom, config, **member)
        train.train("stage3", kind, [built], mesh, checkpoint_every=100, read_threads=1, progress=False)
    assert train.compiled_step(kind, mesh, False)._cache_size() == 1


def test_a_population_killed_while_saving_resumes_from_its_earliest_checkpoint(tmp_path, tiny_phantom):
    """Killed after one member saved step 4 and before the other did, the population goes
    back to step 2 together and ends exactly where it ends uninterrupted."""
    config = presets.tiny()
    model = build_model(config.model.name, 4, config.model.width, config.model.dropout)
    params = jax.device_get(train.init_params(model, config.data.slices, config.data.crop, 0))  # never donated
    common = dict(checkpoint_every=2, read_threads=1, progress=False)
    mesh = train.population_mesh(2)
    finals = {}
    for attempt in ("uninterrupted", "resumed"):
        built = [_stage3_member(tmp_path / attempt, model, params, tiny_phantom, config, **m) for m in MEMBERS]
        kind, members = built[0][0], [member for _, member in built]
        finals[attempt] = train.train("stage3", kind, members, mesh, **common)
    members = [member for _, member in built]
    assert train.latest_step(members[0].checkpoint_dir) == 4
    shutil.rmtree(members[1].checkpoint_dir / "4")  # the kill: member 1 never saved step 4
    assert train.latest_step(members[1].checkpoint_dir) == 2
    built = [_stage3_member(tmp_path / "resumed", model, params, tiny_phantom, config, **m) for m in MEMBERS]
    finals["resumed"] = train.train("stage3", built[0][0], [member for _, member in built], mesh, **common)
    for (state, history, _), (again, again_history, _) in zip(finals["uninterrupted"], finals["resumed"]):
        assert history == again_history
        for a, b in zip(jax.tree.leaves(jax.device_get(state)), jax.tree.leaves(jax.device_get(again)), strict=True):
            np.testing.assert_array_equal(a, b)


def test_class_keep_keeps_each_classes_most_confident_share():
    """δ = 0.9 keeps only class 0's sure pixels; with class_keep = 0.5 each class also keeps
    its more confident half, worked out by hand."""
    probs = jnp.array([[0.95, 0.05], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4],  # class 0: 0.95, 0.8, 0.7, 0.6
                       [0.3, 0.7], [0.45, 0.55]])[None, None]  # class 1: 0.7, 0.55
    target = probs.argmax(-1)
    np.testing.assert_array_equal(train.confident(probs, target, 0.9, 0.0)[0, 0], [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(train.confident(probs, target, 0.9, 0.5)[0, 0], [1, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(train.confident(probs, target, 0.9, 1.0)[0, 0], [1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(train.confident(probs, target, 0.5, 0.0)[0, 0], [1, 1, 1, 1, 1, 1])


@functools.cache
def _tiny_net():
    """A tiny 3-class U-Net, its initial weights and a batch of 4 random 32x32x3 crops."""
    model = build_model("unet", 3, "tiny", 0.0)
    images = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
    return model, model.init(jax.random.key(1), images[:1])["params"], images


def test_a_teacher_with_eight_views_labels_each_crop_with_their_average():
    """With ``teacher_views=8`` the teacher's labels of any weak view are the argmax of the
    8-view average, worked out here on the crop as read; with one view they are not."""
    model, params, images = _tiny_net()
    apply = jax.jit(model.apply)
    average = sum(augment.dihedral_all(jax.nn.softmax(apply({"params": params}, augment.dihedral_all(images, v))),
                                       augment.DIHEDRAL_INVERSE[v]) for v in range(8))
    batch = {"image": images, "label": jnp.asarray(average.argmax(-1))}
    values = {"loss": loss_values(cfg.LossConfig()), **train.unbiased_teacher_values(cfg.Stage3Config())}
    optimizer = optimizer_from(OptimizerSpec.of(cfg.Stage3Config(), 1), 1e-3)
    agreement = {}
    for views in (1, 8):
        state = train.teacher_student_state(params, optimizer, values)
        step = jax.jit(functools.partial(train.unbiased_teacher_step, model=model, optimizer=optimizer,
                                         loss_fn=train.pixel_loss("label_smoothing"), teacher_views=views))
        _, metrics = step(state, batch, jax.random.key(2))
        agreement[views] = float(metrics["pseudo_agreement"])
    assert agreement[8] == 1.0 and agreement[1] < 1.0


@functools.cache
def _stage3_setup():
    """The tiny net's weights, a labelled batch, and one compiled stage-3 step (settings are values in the state)."""
    model, params, images = _tiny_net()
    batch = {"image": images, "label": jax.random.randint(jax.random.key(3), (4, 32, 32), 0, 3)}
    optimizer = optimizer_from(OptimizerSpec.of(cfg.Stage3Config(), 1), 1e-3)
    step_fn = jax.jit(functools.partial(train.unbiased_teacher_step, model=model, optimizer=optimizer,
                                        loss_fn=train.pixel_loss("label_smoothing")))
    return params, optimizer, batch, step_fn


def _one_stage3_step(settings: cfg.Stage3Config, step: int):
    """(state before, state after, metrics) of one stage-3 step at ``step`` with ``settings``."""
    params, optimizer, batch, step_fn = _stage3_setup()
    values = {"loss": loss_values(cfg.LossConfig()), **train.unbiased_teacher_values(settings)}
    state = train.teacher_student_state(params, optimizer, values).replace(step=jnp.asarray(step, jnp.int32))
    return (state, *step_fn(state, batch, jax.random.key(2)))


def test_a_fading_anchor_weighs_the_pseudo_labels_less_each_step_until_it_is_gone():
    """At step t of a 4-step fade, the step is the one with the anchor's weight scaled by
    1 - t/4 and no fade; from step 4 on, the one without an anchor."""

    def loss_at(step: int, anchor: float, fade: int) -> float:
        return float(_one_stage3_step(cfg.Stage3Config(anchor=anchor, anchor_fade=fade), step)[2]["loss"])

    for step, weight in ((1, 0.75), (3, 0.25), (9, 0.0)):
        assert loss_at(step, 1.0, 4) == pytest.approx(loss_at(step, weight, 0), rel=1e-6)
    assert loss_at(1, 1.0, 4) != pytest.approx(loss_at(1, 0.0, 0), rel=1e-3)


def test_a_warming_teacher_follows_the_student_at_rate_min_of_one_minus_one_over_t_and_ema():
    for step, rate in ((0, 0.0), (9, 0.9), (500, 0.99)):
        before, after, _ = _one_stage3_step(cfg.Stage3Config(ema=0.99, ema_warmup=True), step)
        expected = train.ema_update(before.teacher, after.params, rate)
        for got, want in zip(jax.tree.leaves(after.teacher), jax.tree.leaves(expected)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
