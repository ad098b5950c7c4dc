"""Tiled, view-averaged inference against whole-slice inference and by hand."""

import jax
import jax.numpy as jnp
import numpy as np

from srjax import predict, train
from srjax.models import build_model


def test_windows_cover_the_slice_half_overlapping():
    assert predict.window_starts(160, 64) == [0, 32, 64, 96]
    assert predict.window_starts(100, 64) == [0, 32, 36]
    assert predict.window_starts(64, 64) == [0]
    weight = predict.gaussian_window(64)
    assert weight.max() == 1.0 and weight.min() >= 1e-3
    np.testing.assert_allclose(weight, weight.T)


def _model_and_params():
    model = build_model("unet_noskip", 3, "tiny", 0.1)
    return model, train.init_params(model, 3, 32, 0)


def test_one_window_the_size_of_the_slice_is_whole_slice_inference():
    model, params = _model_and_params()
    images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
    whole = train.view_probabilities(model, params, images, 1)
    np.testing.assert_allclose(predict.tiled_probabilities(model, params, images, 32, 1), whole, atol=1e-6)


def test_blended_windows_are_a_weighted_mean_of_each_windows_probabilities():
    """A 48-pixel slice in 32-pixel windows at 0 and 16: by hand, pixel by pixel."""
    model, params = _model_and_params()
    images = jax.random.uniform(jax.random.key(1), (1, 48, 48, 3))
    tiled = np.asarray(predict.tiled_probabilities(model, params, images, 32, 1))
    weight = predict.gaussian_window(32)[..., None]
    total = np.zeros((48, 48, 3))
    weights = np.zeros((48, 48, 1))
    for y in (0, 16):
        for x in (0, 16):
            probs = np.asarray(train.view_probabilities(model, params, images[:, y:y + 32, x:x + 32], 1))[0]
            total[y:y + 32, x:x + 32] += probs * weight
            weights[y:y + 32, x:x + 32] += weight
    np.testing.assert_allclose(tiled[0], total / weights, atol=1e-5)
    np.testing.assert_allclose(tiled.sum(-1), 1.0, atol=1e-5)


def test_view_averaging_is_invariant_to_the_views_of_its_input():
    """Averaged over all 8 views, the probabilities of a rotated stack are the rotated probabilities."""
    model, params = _model_and_params()
    images = jax.random.uniform(jax.random.key(2), (1, 32, 32, 3))
    averaged = train.view_probabilities(model, params, images, 8)
    rotated = train.view_probabilities(model, params, jnp.rot90(images, 1, axes=(1, 2)), 8)
    np.testing.assert_allclose(rotated, jnp.rot90(averaged, 1, axes=(1, 2)), atol=1e-5)
