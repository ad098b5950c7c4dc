import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from srjax.errors import SrjaxError
from srjax.explain import grad_cam
from srjax.losses import cross_entropy
from srjax.models import MODEL_NAMES, SKIP_VARIANTS, build_model


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_paper_preset_has_two_million_parameters_within_ten_percent(name):
    model = build_model(name, num_classes=4, width="paper")
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 7))))
    count = sum(x.size for x in jax.tree.leaves(shapes["params"]))
    assert 1.8e6 <= count <= 2.2e6, count


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_builds_jits_differentiates_and_keeps_odd_sizes(name):
    model = build_model(name, num_classes=3, width="tiny")
    x = jax.random.normal(jax.random.key(1), (2, 37, 29, 3))
    params = model.init(jax.random.key(0), x)["params"]
    labels = jnp.zeros((2, 37, 29), jnp.int32)

    @jax.jit
    def loss_and_grad(params):
        def loss(p):
            logits = model.apply({"params": p}, x, train=True, rngs={"dropout": jax.random.key(2)})
            return cross_entropy(logits, labels).mean(), logits.shape
        return jax.value_and_grad(loss, has_aux=True)(params)

    (value, shape), grads = loss_and_grad(params)
    assert shape == (2, 37, 29, 3)
    assert np.isfinite(float(value))
    norms = [float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads)]
    assert all(np.isfinite(norms)) and sum(n > 0 for n in norms) >= 0.9 * len(norms)


def _output_with_encoder_noise(model, params, x, frozen_bottleneck):
    """The model's output with noise added to its first encoder block's features and its
    bottleneck's output replaced by ``frozen_bottleneck`` (from a clean run)."""

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name != "__call__":
            return out
        path = "/".join(context.module.path)
        if path == "encoder_0":
            return out + jax.random.normal(jax.random.key(7), out.shape)
        if path == "bottleneck" and frozen_bottleneck is not None:
            return frozen_bottleneck
        return out

    with nn.intercept_methods(interceptor):
        return model.apply({"params": params}, x)


def _bottleneck(model, params, x):
    captured = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and "/".join(context.module.path) == "bottleneck":
            captured["out"] = out
        return out

    with nn.intercept_methods(interceptor):
        clean = model.apply({"params": params}, x)
    return clean, captured["out"]


@pytest.mark.parametrize("name", SKIP_VARIANTS)
def test_noskip_variant_reaches_the_decoder_only_through_the_bottleneck(name):
    """With the bottleneck held fixed, noise in the first encoder features must not move the
    output of the no-skip variant; in the skip variant (the control) it must."""
    x = jax.random.normal(jax.random.key(3), (1, 32, 32, 3))
    for variant, has_skips in ((name, True), (f"{name}_noskip", False)):
        model = build_model(variant, num_classes=3, width="tiny")
        params = model.init(jax.random.key(0), x)["params"]
        clean, bottleneck = _bottleneck(model, params, x)
        noisy = _output_with_encoder_noise(model, params, x, bottleneck)
        moved = float(jnp.abs(noisy - clean).max())
        if has_skips:
            assert moved > 1e-3, variant
        else:
            assert moved == 0.0, variant
        # and without the bottleneck held fixed, the noise does reach the output
        assert float(jnp.abs(_output_with_encoder_noise(model, params, x, None) - clean).max()) > 1e-3


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(SrjaxError, match="attention_unet, attention_unet_noskip, deeplabv3plus"):
        build_model("segnet", 4)


def _squares(rng, n):
    images = rng.normal(0, 0.1, (n, 32, 32, 3)).astype(np.float32)
    labels = np.zeros((n, 32, 32), np.int32)
    for i in range(n):
        r, c = rng.integers(2, 22, 2)
        images[i, r:r + 8, c:c + 8] += 1.0
        labels[i, r:r + 8, c:c + 8] = 1
    return images, labels


def test_grad_cam_is_non_negative_and_highlights_a_planted_square():
    rng = np.random.default_rng(0)
    model = build_model("unet_noskip", num_classes=2, width="tiny", dropout=0.0)
    params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    optimizer = optax.adam(3e-2)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        grads = jax.grad(lambda p: cross_entropy(model.apply({"params": p}, x), y).mean())(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    for _ in range(120):
        params, opt_state = step(params, opt_state, *map(jnp.asarray, _squares(rng, 8)))
    image, label = _squares(rng, 1)
    for layer in (None, "decoder_0"):
        cam = grad_cam(model, params, image[0], class_id=1, layer=layer)
        assert cam.shape == (32, 32) and cam.min() >= 0.0 and cam.max() <= 1.0
        assert cam[label[0] == 1].mean() > 3 * cam[label[0] == 0].mean(), layer
    with pytest.raises(SrjaxError, match="bottleneck, decoder_0, encoder_0"):
        grad_cam(model, params, image[0], class_id=1, layer="nonexistent")
    with pytest.raises(SrjaxError, match="out of range"):
        grad_cam(model, params, image[0], class_id=5)
