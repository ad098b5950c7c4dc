"""Stage 3's switches, each on and off against the default, over seeds and phantom families.

Every variant of one seed on one family shares that seed's stage 1 and stage 2: only
stage 3 and the two predictions differ.
"""

from srjax.sweep import Sweep, sized, variants

SEEDS = {"tiny": (0,), "cpu": (0, 1, 2, 3, 4), "paper": (0, 1, 2, 3, 4)}

VARIANTS = {
    "default": {},
    "whole_slice_inference": {"predict_tiled": False},
    "anchor_0.3": {"stage3.anchor": 0.3},
    "ema_0.999": {"stage3.ema": 0.999},
    "no_strong": {"stage3.strong_probability": 0.0},
    "confidence_0.9": {"stage3.confidence": 0.9},
}


def sweep(size: str) -> Sweep:
    base, phantom = sized(size)
    volumes = {"magnesium": phantom}
    return Sweep("self_correction", base, volumes, variants(volumes, VARIANTS, SEEDS[size]))
