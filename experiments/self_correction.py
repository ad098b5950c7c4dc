"""Stage 3's switches over seeds and phantom families, each against one candidate recipe.

The ``candidate`` is what a 2-seed pilot on the four families pointed at: the U-Net with
skip connections (the no-skip net of the paper loses the rock's rare phase and fine
detail in stage 2), slices labelled in windows of the training crop, and stage 3
anchored to the pseudo labels with weight 1: srjax's defaults since its 5 seeds.
``paper`` is the paper's recipe (``--recipe paper``: the no-skip net, whole slices, no
anchor). Every other variant is the candidate with one switch turned off, or another
turned on; ``no_skips_class_crops`` asks whether class-centred crops let the no-skip net
(which corrected the magnesium drift best in the pilot) keep the rock's rare phase.

Every variant of one seed on one family shares that seed's stage 1; variants with the
same net and crops share stage 2 (``paper`` and ``no_skips``; each ``class_crops``
variant its own; all the others one), and variants that
differ only in how the volume is labelled afterwards share stage 3 as well
(``candidate``, ``whole_slice_inference``, ``eight_views`` and ``guard``; ``no_skips``
and ``no_skips_guard``). ``guard`` puts the net's labels through the intensity guard
(``srjax.guard``): the no-skip net sees through drift and cupping but blurs small
things, which the guard hands back to the voxel values. The families
(``srjax.phantom.FAMILIES``): magnesium (drift, thin sheets; the demo), composite (well
separated, clustering nearly right), cupping (beam hardening) and rock (a rare bright
phase at ~2 % of the voxels, cracks).

At the cpu size the whole study is about 22 hours of a 2-core machine running two shares
at a time; ``--members`` runs a share of it (``'*,candidate,*'`` first) and ``--prior``
carries members finished elsewhere.
"""

from srjax.phantom import CLASSES, family
from srjax.presets import RECIPES
from srjax.sweep import Sweep, sized, variants

SEEDS = {"tiny": (0,), "cpu": (0, 1, 2, 3, 4), "paper": (0, 1, 2, 3, 4)}
FAMILIES = {"tiny": ("magnesium",), "cpu": ("magnesium", "composite", "cupping", "rock"),
            "paper": ("magnesium", "composite", "cupping", "rock")}

CANDIDATE = {"model.name": "unet", "predict_tiled": True, "stage3.anchor": 1.0}
SWITCHES = {
    "candidate": {},
    "paper": dict(item.split("=") for item in RECIPES["paper"]),
    "no_skips": {"model.name": "unet_noskip"},
    "no_anchor": {"stage3.anchor": 0.0},
    "whole_slice_inference": {"predict_tiled": False},
    "eight_views": {"predict_views": 8},
    "cutmix": {"stage3.cutmix": 0.5},
    "teacher_four_views": {"stage3.teacher_views": 4},
    "class_balanced_confidence": {"stage3.confidence": 0.9, "stage3.class_keep": 0.5},
    "slower_teacher": {"stage3.ema": 0.999},
    "teacher_warmup": {"stage3.ema_warmup": True},
    "stage3_twice_as_long": {"stage3.steps": 2400},
    "light_anchor": {"stage3.anchor": 0.3},
    "fading_anchor": {"stage3.anchor_fade": 600},  # gone halfway through stage 3
    "class_crops": {"data.class_crops": 0.33},
    "no_skips_class_crops": {"model.name": "unet_noskip", "data.class_crops": 0.33},
    "guard": {"guard": 3.0},
    "no_skips_guard": {"model.name": "unet_noskip", "guard": 3.0},
}
# At the tiny size (the test suite runs every study) one variant per kind of sharing is enough.
TINY = ("candidate", "paper", "no_anchor", "eight_views")


def sweep(size: str) -> Sweep:
    base, phantom = sized(size)
    names = FAMILIES[size]
    volumes = {name: family(name, phantom.shape) for name in names}
    classes = {name: {"pseudo.classes": CLASSES[name]} for name in names}
    chosen = {name: {**CANDIDATE, **switch} for name, switch in SWITCHES.items() if size != "tiny" or name in TINY}
    return Sweep("self_correction", base, volumes, variants(volumes, chosen, SEEDS[size], classes))
