"""Tiled, view-averaged inference against whole-slice inference and by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_the_slice_window_reads_each_slice_once_and_stacks_as_read_stack(monkeypatch):
    from srjax import data, io

    volume = io.as_volume(np.random.default_rng(0).random((11, 16, 16)).astype(np.float32))
    batches = [list(range(start, min(start + 3, 11))) for start in range(0, 11, 3)]
    whole = slice(None)
    expected = [np.stack([data.read_stack(volume, z, 5, whole, whole, 0.1, 0.9) for z in zs]) for zs in batches]
    read = []
    real_read = io.read
    monkeypatch.setattr(io, "read", lambda view, name: read.append(view.shape[0]) or real_read(view, name))
    window = predict.SliceWindow(volume, 0.1, 0.9, 5)
    for zs, stacks in zip(batches, expected):
        np.testing.assert_array_equal(window.stacks(zs), stacks)
        assert len(window.slices) <= 3 + 4  # the batch and its context, no more
    assert sum(read) == 11


def test_slices_labelled_in_shares_equal_the_volume_labelled_at_once():
    model, params = _model_and_params()
    from srjax import io

    volume = io.as_volume(np.random.default_rng(1).random((9, 32, 32)).astype(np.float32))
    mesh = train.make_mesh(jax.devices()[:2])
    outputs = []
    for shares in ([range(9)], [range(0, 4), range(4, 9)]):
        labels, confidence = np.zeros(volume.shape, np.uint8), np.zeros(volume.shape, np.uint8)
        total = sum(predict.predict_volume(model, params, volume, 0.0, 1.0, 3, 4, mesh, labels, confidence,
                                           progress=False, slices=share) for share in shares)
        outputs.append((labels, confidence, total))
    (labels, confidence, total), (labels2, confidence2, total2) = outputs
    np.testing.assert_array_equal(labels, labels2)
    np.testing.assert_array_equal(confidence, confidence2)
    assert confidence.min() >= round(255 / 3)  # a max probability of 3 classes is at least 1/3
    np.testing.assert_allclose(total, total2, rtol=1e-6)
    np.testing.assert_allclose(total / confidence.size, confidence.mean() / 255, atol=1 / 255)


@pytest.mark.parametrize("budget,per_slice,expected", [(10e9, 1e9, 10), (0.5e9, 1e9, 1), (1e12, 1e6, 64)])
def test_an_auto_batch_fills_the_budget_within_bounds(budget, per_slice, expected):
    assert predict.slices_per_device(budget, per_slice) == expected


def _labelled(batch_size, precision="float32"):
    from srjax import io

    model, params = _model_and_params()
    volume = io.as_volume(np.random.default_rng(2).random((9, 32, 32)).astype(np.float32))
    labels, confidence = np.zeros(volume.shape, np.uint8), np.zeros(volume.shape, np.uint8)
    predict.predict_volume(model, params, volume, 0.0, 1.0, 3, batch_size, train.make_mesh(jax.devices()[:2]),
                           labels, confidence, precision=precision, progress=False)
    return labels, confidence


def test_the_auto_batch_labels_as_a_given_one():
    labels, confidence = _labelled(4)
    auto_labels, auto_confidence = _labelled("auto")
    np.testing.assert_array_equal(labels, auto_labels)
    np.testing.assert_array_equal(confidence, auto_confidence)


def test_bfloat16_inference_changes_few_labels():
    labels, confidence = _labelled(4)
    half_labels, half_confidence = _labelled(4, "bfloat16")
    assert np.mean(labels == half_labels) > 0.95
    assert np.abs(confidence.astype(int) - half_confidence).mean() < 3  # steps of 1/255
