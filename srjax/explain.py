"""Grad-CAM for segmentation (Selvaraju et al. 2017; Vinogradova et al. 2020).

For class c, the score is the sum of c's logits over the pixels predicted as c (all
pixels if none is). A layer's activations A [h, w, C] are weighted per channel by the
spatial mean of d score / d A; the map is ReLU(sum_k w_k A_k), bilinearly resized to
the input and scaled to [0, 1]. Any module of a registered model can be the layer,
named by its path (e.g. ``bottleneck`` or ``decoder_1``); each family names a sensible
default in ``cam_layer``. Gradients with respect to a module's output come from adding
a zero perturbation to it through ``flax.linen.intercept_methods``.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from srjax.errors import SrjaxError


def _apply(model, params, images, layer: str | None, delta=None):
    """Logits, and the output of every 4-D module (or only ``layer``'s, plus ``delta``)."""
    outputs = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        path = "/".join(context.module.path)
        if context.method_name == "__call__" and path and getattr(out, "ndim", 0) == 4:
            if layer is None or path == layer:
                if delta is not None:
                    out = out + delta
                outputs[path] = out
        return out

    with nn.intercept_methods(interceptor):
        logits = model.apply({"params": params}, images, train=False)
    return logits, outputs


@functools.lru_cache(maxsize=8)
def _outputs_of(model, layers: tuple[str, ...]):
    return jax.jit(lambda params, images: {k: v for k, v in _apply(model, params, images, None)[1].items()
                                           if k in layers})


def module_outputs(model, params, images: np.ndarray, layers: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The outputs of the modules ``layers`` (paths) for a batch of [n, H, W, S] images."""
    found = _outputs_of(model, tuple(layers))(params, jnp.asarray(images, jnp.float32))
    missing = set(layers) - set(found)
    if missing:
        raise SrjaxError(f"{', '.join(sorted(missing))} is not a feature map of this model")
    return {name: np.asarray(value, np.float32) for name, value in found.items()}


def layer_names(model, params, image_shape) -> list[str]:
    """Paths of the modules whose outputs are feature maps."""
    _, outputs = jax.eval_shape(lambda p: _apply(model, p, jnp.zeros((1, *image_shape)), None), params)
    return list(outputs)


def grad_cam(model, params, image: np.ndarray, class_id: int, layer: str | None = None) -> np.ndarray:
    """[H, W] class activation map in [0, 1] for one [H, W, S] image."""
    layer = layer or model.cam_layer
    images = jnp.asarray(image, jnp.float32)[None]
    _, shapes = jax.eval_shape(lambda p: _apply(model, p, images, layer), params)
    if layer not in shapes:
        names = [name for name in layer_names(model, params, image.shape) if "/" not in name]
        raise SrjaxError(f"layer {layer!r} is not a feature map of this model; choose one of {', '.join(names)} "
                         "(or a module inside one, e.g. bottleneck/ConvUnit_0)")
    num_classes = jax.eval_shape(lambda p: model.apply({"params": p}, images), params).shape[-1]
    if not 0 <= class_id < num_classes:
        raise SrjaxError(f"class {class_id} is out of range; the model has classes 0-{num_classes - 1}")

    def score(delta):
        logits, outputs = _apply(model, params, images, layer, delta)
        predicted = jax.lax.stop_gradient(logits.argmax(-1) == class_id)
        region = jnp.where(predicted.any(), predicted, True)
        return (logits[..., class_id] * region).sum(), outputs[layer]

    grads, activation = jax.grad(score, has_aux=True)(jnp.zeros(shapes[layer].shape, shapes[layer].dtype))
    weights = grads.mean(axis=(1, 2), keepdims=True)
    cam = jax.nn.relu((weights * activation).sum(-1, keepdims=True))
    cam = jax.image.resize(cam, (1, *image.shape[:2], 1), "bilinear")[0, ..., 0]
    cam = np.asarray(jnp.maximum(cam, 0.0))  # bilinear resizing can undershoot zero by rounding
    return cam / cam.max() if cam.max() > 0 else cam
