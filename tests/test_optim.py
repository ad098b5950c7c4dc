"""Optimizers and schedules from the config, and stage-3 methods by registration."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from srjax import config as cfg
from srjax import presets, train
from srjax.optim import make_optimizer, schedule_shape


def _descend(optimizer, steps=5):
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    state = optimizer.init(params)
    for _ in range(steps):
        grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2 * jnp.array([1.0, 2.0, 3.0])))(params)
        updates, state = optimizer.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params["w"]


def test_the_default_is_plain_adam():
    settings = cfg.Stage2Config(learning_rate=0.01)
    np.testing.assert_array_equal(_descend(make_optimizer(settings, 5)), _descend(optax.adam(0.01)))


def test_adamw_matches_optax_adamw():
    settings = cfg.Stage2Config(optimizer="adamw", learning_rate=0.01, weight_decay=0.1)
    np.testing.assert_allclose(_descend(make_optimizer(settings, 5)), _descend(optax.adamw(0.01, weight_decay=0.1)),
                               rtol=1e-6)


def test_sgd_matches_optax_sgd_with_nesterov_momentum():
    settings = cfg.Stage2Config(optimizer="sgd", learning_rate=0.01)
    np.testing.assert_allclose(_descend(make_optimizer(settings, 5)),
                               _descend(optax.sgd(0.01, momentum=0.9, nesterov=True)), rtol=1e-6)


def test_warmup_then_cosine_by_hand():
    settings = cfg.Stage2Config(schedule="cosine", warmup_steps=4)
    shape = schedule_shape(settings, 12)
    got = [float(shape(step)) for step in range(13)]
    expected = [s / 4 for s in range(4)] + [0.5 * (1 + np.cos(np.pi * (s - 4) / 8)) for s in range(4, 13)]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_learning_rates_share_one_compiled_update():
    """The learning rate is state, not a constant of the program."""

    @jax.jit
    def update(state, params):
        return optimizer.update(params, state, params)

    params = {"w": jnp.ones(3)}
    for rate in (1e-3, 3e-3, 1e-2):
        optimizer = make_optimizer(cfg.Stage2Config(learning_rate=rate), 10)
        state = optimizer.init(params)
        updates, _ = update(state, params)
        assert float(state.hyperparams["learning_rate"]) == pytest.approx(rate)
    assert update._cache_size() == 1


def test_a_registered_stage3_method_runs_without_editing_the_pipeline(tmp_path, tiny_phantom, monkeypatch):
    """A method whose student (not the teacher) labels the volume, added as one registry entry."""
    from srjax.pipeline import run_pipeline
    from srjax.train import STAGE3_METHODS, Stage3Method

    monkeypatch.setitem(STAGE3_METHODS, "student_labels",
                        Stage3Method(train.teacher_student_state, train.unbiased_teacher_step,
                                     train.unbiased_teacher_values, predict_with="params"))
    volume, _ = tiny_phantom
    config = presets.tiny()
    config = dataclasses.replace(config, stage3=dataclasses.replace(config.stage3, method="student_labels"))
    metrics = run_pipeline(volume, tmp_path / "run", config, progress=False)
    assert metrics["summary"]["classes"]
    with pytest.raises(Exception, match="stage3.method='nope' is not one of"):
        cfg.validate(cfg.apply_overrides(presets.tiny(), ["stage3.method=nope"]))
