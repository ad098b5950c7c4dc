"""Segmentation nets by name: ``build_model(name, ...)`` returns a Flax module."""

from __future__ import annotations

import functools

from srjax.errors import SrjaxError
from srjax.models import unet

_REGISTRY = {
    "unet": (functools.partial(unet.UNet, skip=True), unet.WIDTHS),
    "unet_noskip": (functools.partial(unet.UNet, skip=False), unet.WIDTHS),
}

MODEL_NAMES = tuple(sorted(_REGISTRY))


def build_model(name: str, num_classes: int, width: str = "paper", dropout: float = 0.1):
    if name not in _REGISTRY:
        raise SrjaxError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    constructor, widths = _REGISTRY[name]
    if width not in widths:
        raise SrjaxError(f"unknown width preset {width!r} for model {name}; choose one of {', '.join(widths)}")
    return constructor(num_classes=num_classes, widths=widths[width], dropout=dropout)
