import jax.numpy as jnp
import numpy as np
import pytest

from srjax.config import LossConfig
from srjax.errors import SrjaxError
from srjax.losses import cross_entropy, masked_mean, pixel_loss

LOGITS = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]], np.float32)
LABELS = np.array([0, 2])


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
    loss = pixel_loss(LossConfig(name="label_smoothing", smoothing=eps))
    np.testing.assert_allclose(loss(jnp.asarray(LOGITS), jnp.asarray(LABELS)), expected, rtol=1e-6)


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
    with pytest.raises(SrjaxError, match="cross_entropy, label_smoothing"):
        pixel_loss(LossConfig(name="dice"))
