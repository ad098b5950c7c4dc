"""Stage 3's switches, each turned off (or on) against the default, over seeds and phantom families.

Every variant of one seed on one family shares that seed's stage 1 and stage 2, and
variants that differ only in how the volume is labelled afterwards (``paper`` and
``no_anchor``, the inference variants and ``default``) share stage 3 as well. The
families (``srjax.phantom.FAMILIES``): magnesium (drift, thin sheets; the demo),
composite (well separated, clustering nearly right), cupping (beam hardening) and rock
(a rare bright phase at ~2 % of the voxels, cracks).
"""

from srjax.phantom import CLASSES, family
from srjax.presets import RECIPES
from srjax.sweep import Sweep, sized, variants

SEEDS = {"tiny": (0,), "cpu": (0, 1, 2, 3, 4), "paper": (0, 1, 2, 3, 4)}
FAMILIES = {"tiny": ("magnesium",), "cpu": ("magnesium", "composite", "cupping", "rock"),
            "paper": ("magnesium", "composite", "cupping", "rock")}

VARIANTS = {
    "default": {},
    "paper": dict(item.split("=") for item in RECIPES["paper"]),
    "no_anchor": {"stage3.anchor": 0.0},
    "whole_slice_inference": {"predict_tiled": False},
    "eight_views": {"predict_views": 8},
    "cutmix": {"stage3.cutmix": 0.5},
    "class_balanced_confidence": {"stage3.confidence": 0.9, "stage3.class_keep": 0.5},
    "stage3_twice_as_long": {"stage3.steps": 2400},
}


def sweep(size: str) -> Sweep:
    base, phantom = sized(size)
    names = FAMILIES[size]
    volumes = {name: family(name, phantom.shape) for name in names}
    classes = {name: {"pseudo.classes": CLASSES[name]} for name in names}
    return Sweep("self_correction", base, volumes, variants(volumes, VARIANTS, SEEDS[size], classes))
