"""Segmentation nets by name: ``build_model(name, ...)`` returns a Flax module.

Every model maps [B, H, W, slices] to [B, H, W, classes] logits for any H and W (it
pads to its stride and crops back), and names the layer Grad-CAM uses by default in
``cam_layer``. ``*_noskip`` variants pass nothing of the encoder to the decoder except
through the bottleneck. Each has its own width presets: at ``paper`` (7 slices, 4
classes) every model has 2.0M parameters within 10 %.
"""

from __future__ import annotations

import functools

from srjax.errors import SrjaxError
from srjax.models import deeplab, resunet, segformer, unet, unet3p, unetpp

_REGISTRY = {
    "unet": (functools.partial(unet.UNet, skip=True), unet.WIDTHS),
    "unet_noskip": (functools.partial(unet.UNet, skip=False), unet.WIDTHS),
    "unetpp": (functools.partial(unetpp.UNetPlusPlus, skip=True), unetpp.WIDTHS),
    "unetpp_noskip": (functools.partial(unetpp.UNetPlusPlus, skip=False), unetpp.NOSKIP_WIDTHS),
    "unet3p": (functools.partial(unet3p.UNet3Plus, skip=True), unet3p.WIDTHS),
    "unet3p_noskip": (functools.partial(unet3p.UNet3Plus, skip=False), unet3p.NOSKIP_WIDTHS),
    "resunet": (functools.partial(resunet.ResUNet, skip=True), resunet.RESUNET_WIDTHS),
    "resunet_noskip": (functools.partial(resunet.ResUNet, skip=False), resunet.RESUNET_NOSKIP_WIDTHS),
    "resunetpp": (functools.partial(resunet.ResUNet, skip=True, plus_plus=True), resunet.RESUNETPP_WIDTHS),
    "resunetpp_noskip": (functools.partial(resunet.ResUNet, skip=False, plus_plus=True),
                         resunet.RESUNETPP_NOSKIP_WIDTHS),
    "attention_unet": (functools.partial(unet.UNet, skip=True, attention=True), unet.ATTENTION_WIDTHS),
    "attention_unet_noskip": (functools.partial(unet.UNet, skip=False, attention=True), unet.ATTENTION_NOSKIP_WIDTHS),
    "deeplabv3plus": (deeplab.DeepLabV3Plus, deeplab.WIDTHS),
    "segformer": (segformer.SegFormer, segformer.WIDTHS),
}

MODEL_NAMES = tuple(sorted(_REGISTRY))
SKIP_VARIANTS = tuple(name for name in MODEL_NAMES if f"{name}_noskip" in _REGISTRY)


def build_model(name: str, num_classes: int, width: str = "paper", dropout: float = 0.1):
    if name not in _REGISTRY:
        raise SrjaxError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    constructor, widths = _REGISTRY[name]
    if width not in widths:
        raise SrjaxError(f"unknown width preset {width!r} for model {name}; choose one of {', '.join(widths)}")
    return constructor(num_classes=num_classes, widths=widths[width], dropout=dropout)


def width_names(name: str) -> tuple[str, ...]:
    """The width presets model ``name`` has."""
    return tuple(_REGISTRY[name][1])
