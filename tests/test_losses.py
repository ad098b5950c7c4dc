import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srjax.config import LossConfig
from srjax.errors import SrjaxError
from srjax.losses import LOSS_NAMES, cross_entropy, loss_values, masked_mean, pixel_loss

LOGITS = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]], np.float32)
LABELS = np.array([0, 2])


def configured_loss(config: LossConfig):
    loss, values = pixel_loss(config.name), loss_values(config)
    return lambda logits, labels: loss(logits, labels, values)


def _log_softmax(row):
    return row - np.log(np.exp(row).sum())


def test_cross_entropy_by_hand():
    expected = [-_log_softmax(LOGITS[0])[0], -_log_softmax(LOGITS[1])[2]]
    np.testing.assert_allclose(cross_entropy(jnp.asarray(LOGITS), jnp.asarray(LABELS)), expected, rtol=1e-6)


def test_label_smoothing_by_hand():
    eps, k = 0.1, 3
    expected = []
    for row, label in zip(LOGITS, LABELS):
        target = np.full(k, eps / k)
        target[label] += 1 - eps
        expected.append(-(target * _log_softmax(row)).sum())
    loss = configured_loss(LossConfig(name="label_smoothing", smoothing=eps))
    np.testing.assert_allclose(loss(jnp.asarray(LOGITS), jnp.asarray(LABELS)), expected, rtol=1e-6)


def _softmax(row):
    return np.exp(_log_softmax(row))


def _by_hand(name, row, label, k=3):
    """Each loss written out from its paper's formula for one pixel, in numpy."""
    log_p, p, t = _log_softmax(row), _softmax(row), np.eye(k)[label]
    if name == "bootstrap_soft":
        return -((0.95 * t + 0.05 * p) * log_p).sum()
    if name == "bootstrap_hard":
        return -((0.8 * t + 0.2 * np.eye(k)[np.argmax(row)]) * log_p).sum()
    if name == "gce":
        return (1 - p[label] ** 0.7) / 0.7
    if name == "sce":
        rce = -(p * np.where(t > 0, 0.0, -4.0)).sum()
        return 0.1 * -log_p[label] + 1.0 * rce
    if name == "focal":
        return -((1 - p[label]) ** 2) * log_p[label]
    raise KeyError(name)


@pytest.mark.parametrize("name", ["bootstrap_soft", "bootstrap_hard", "gce", "sce", "focal"])
def test_noisy_label_losses_by_hand_at_their_papers_defaults(name):
    expected = [_by_hand(name, row, label) for row, label in zip(LOGITS, LABELS)]
    loss = configured_loss(LossConfig(name=name))
    np.testing.assert_allclose(loss(jnp.asarray(LOGITS), jnp.asarray(LABELS)), expected, rtol=1e-5)


@pytest.mark.parametrize("name, neutral", [
    ("label_smoothing", {"smoothing": 0.0}),
    ("bootstrap_soft", {"soft_beta": 1.0}),
    ("bootstrap_hard", {"hard_beta": 1.0}),
    ("gce", {"gce_q": 1e-4}),  # the q -> 0 limit
    ("sce", {"sce_alpha": 1.0, "sce_beta": 0.0}),
    ("focal", {"focal_gamma": 0.0}),
])
def test_every_loss_reduces_to_cross_entropy_at_its_neutral_setting(name, neutral):
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(5, 4)), jnp.float32)
    labels = jnp.asarray([0, 1, 2, 3, 1])
    loss = configured_loss(LossConfig(name=name, **neutral))
    np.testing.assert_allclose(loss(logits, labels), cross_entropy(logits, labels), rtol=2e-4)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_masked_loss_ignores_masked_pixels(name):
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(2, 3, 3, 4)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 4, (2, 3, 3)))
    mask = jnp.asarray(rng.random((2, 3, 3)) < 0.5)
    loss = configured_loss(LossConfig(name=name))

    def masked(x):
        return masked_mean(loss(x, labels), mask)

    value, grad = jax.value_and_grad(masked)(logits)
    changed = jnp.where(mask[..., None], logits, logits + 7.0)  # scramble only the masked-out pixels
    np.testing.assert_allclose(masked(changed), value, rtol=1e-6)
    assert float(jnp.abs(grad[~mask]).max()) == 0.0
    np.testing.assert_allclose(value, loss(logits, labels)[mask].mean(), rtol=1e-6)


def test_masked_cross_entropy_normalises_by_kept_pixels():
    logits = np.zeros((1, 2, 2, 2), np.float32)
    logits[0, 0, 0] = [3.0, 0.0]
    logits[0, 1, 1] = [0.0, 1.0]
    labels = np.array([[[0, 1], [1, 0]]])
    mask = np.array([[[True, False], [False, True]]])
    per_pixel = cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
    # kept: pixel (0,0) label 0 with logits [3,0]; pixel (1,1) label 0 with logits [0,1]
    expected = (np.log(1 + np.exp(-3.0)) + np.log(1 + np.exp(1.0))) / 2
    np.testing.assert_allclose(masked_mean(per_pixel, jnp.asarray(mask)), expected, rtol=1e-6)
    assert float(masked_mean(per_pixel, jnp.zeros_like(mask))) == 0.0


def test_unknown_loss_lists_the_valid_ones():
    with pytest.raises(SrjaxError, match="bootstrap_hard, bootstrap_soft, cross_entropy, focal, gce, label_smoothing, sce"):
        configured_loss(LossConfig(name="dice"))
