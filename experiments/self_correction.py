"""Stage 3's switches over seeds and phantom families, each against one candidate recipe.

The library's defaults are the paper's recipe (``paper``). A 2-seed pilot on the four
families pointed at the ``candidate``: slices labelled in windows of the training crop,
and stage 3 anchored to the pseudo labels with weight 1. This study tests that over
5 seeds, and each switch turned off, or another turned on, against it.

Every variant of one seed on one family shares that seed's stage 1 and stage 2, and
variants that differ only in how the volume is labelled afterwards share stage 3 as
well (``paper`` and ``no_anchor``; ``candidate``, ``whole_slice_inference`` and
``eight_views``). The families (``srjax.phantom.FAMILIES``): magnesium (drift, thin
sheets; the demo), composite (well separated, clustering nearly right), cupping (beam
hardening) and rock (a rare bright phase at ~2 % of the voxels, cracks).
"""

from srjax.phantom import CLASSES, family
from srjax.presets import RECIPES
from srjax.sweep import Sweep, sized, variants

SEEDS = {"tiny": (0,), "cpu": (0, 1, 2, 3, 4), "paper": (0, 1, 2, 3, 4)}
FAMILIES = {"tiny": ("magnesium",), "cpu": ("magnesium", "composite", "cupping", "rock"),
            "paper": ("magnesium", "composite", "cupping", "rock")}

CANDIDATE = {"predict_tiled": True, "stage3.anchor": 1.0}
SWITCHES = {
    "candidate": {},
    "paper": dict(item.split("=") for item in RECIPES["paper"]),
    "no_anchor": {"stage3.anchor": 0.0},
    "anchor_0.3": {"stage3.anchor": 0.3},
    "whole_slice_inference": {"predict_tiled": False},
    "eight_views": {"predict_views": 8},
    "cutmix": {"stage3.cutmix": 0.5},
    "class_balanced_confidence": {"stage3.confidence": 0.9, "stage3.class_keep": 0.5},
    "stage3_twice_as_long": {"stage3.steps": 2400},
}
VARIANTS = {name: {**CANDIDATE, **switch} for name, switch in SWITCHES.items()}


def sweep(size: str) -> Sweep:
    base, phantom = sized(size)
    names = FAMILIES[size]
    volumes = {name: family(name, phantom.shape) for name in names}
    classes = {name: {"pseudo.classes": CLASSES[name]} for name in names}
    return Sweep("self_correction", base, volumes, variants(volumes, VARIANTS, SEEDS[size], classes))
