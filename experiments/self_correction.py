"""Stage 3's switches over seeds and phantom families, each against srjax's default.

The ``default`` is srjax's recipe: the paper's U-Net without skips, whole slices
labelled at once, stage 3 anchored to the pseudo labels with weight 1, CutMix between
the student's crops, and stage 3's labels through the intensity guard (``srjax.guard``).
The no-skip net sees through drift and cupping but blurs small things, which the guard
hands back to the voxel values. ``paper`` is the paper's recipe (``--recipe paper``: no
anchor, no CutMix, no guard); ``skips`` is the U-Net with skip connections, labelling in
windows, with no guard and no CutMix (srjax's default before this study: it keeps
detail, and with it clustering's drift and cupping errors). Every other variant is the
default with one switch turned off, or another turned on. ``no_cutmix`` is the default
before CutMix joined it; the ``no_cutmix_*`` variants were measured against it.

Every variant of one seed on one family shares that seed's stage 1; variants with the
same net and crops share stage 2 (``default``, ``paper`` and every stage-3 switch;
``skips`` and ``skips_guard``; ``class_crops`` and ``no_cutmix_class_crops``), and
variants that differ only in how the volume is labelled afterwards share stage 3 as well
(``default``, ``no_guard``, ``windowed_inference`` and ``eight_views``; the same four
without CutMix; ``skips`` and ``skips_guard``; ``no_cutmix_no_anchor`` and ``paper``), as
do the ``no_cutmix_stage3_*`` durations (one 2,400-step stage 3). A member shares a
finished member's work only when both are selected in the same run. The families
(``srjax.phantom.FAMILIES``): magnesium (drift, thin sheets; the demo), composite (well
separated, clustering nearly right), cupping (beam hardening) and rock (a rare bright
phase at ~2 % of the voxels, cracks).

At the cpu size the whole study is days of a 2-core machine running two shares at a
time; ``--members`` runs a share of it (``'*,default,*'`` first) and ``--prior`` carries
members finished elsewhere. Results from before a default changed were kept under their
variant's present name (``candidate``, which labelled in windows, is ``skips``;
``no_skips_guard`` is ``windowed_inference`` then ``no_cutmix_windowed_inference``;
``whole_slice_inference`` is ``default`` then ``no_cutmix``; ``cutmix`` is ``default``
and ``cutmix_*`` the switches on top of it): the same configs, which ``--prior`` checks
member by member.
"""

from srjax.phantom import CLASSES, family
from srjax.presets import RECIPES
from srjax.sweep import Sweep, sized, variants

SEEDS = {"tiny": (0,), "cpu": (0, 1, 2, 3, 4), "paper": (0, 1, 2, 3, 4)}
FAMILIES = {"tiny": ("magnesium",), "cpu": ("magnesium", "composite", "cupping", "rock"),
            "paper": ("magnesium", "composite", "cupping", "rock")}

STAGE3_STEPS = (300, 600, 900, 1500, 1800, 2100, 2400)
DEFAULT = {"model.name": "unet_noskip", "guard": 3.0, "predict_tiled": False, "stage3.anchor": 1.0,
           "stage3.cutmix": 0.5}
SWITCHES = {
    "default": {},
    "paper": dict(item.split("=") for item in RECIPES["paper"]),
    "skips": {"model.name": "unet", "guard": 0.0, "predict_tiled": True, "stage3.cutmix": 0.0},
    "skips_guard": {"model.name": "unet", "predict_tiled": True, "stage3.cutmix": 0.0},
    "no_cutmix": {"stage3.cutmix": 0.0},
    "no_guard": {"guard": 0.0},
    "no_anchor": {"stage3.anchor": 0.0},
    "windowed_inference": {"predict_tiled": True},
    "eight_views": {"predict_views": 8},
    "teacher_four_views": {"stage3.teacher_views": 4},
    "class_balanced_confidence": {"stage3.confidence": 0.9, "stage3.class_keep": 0.5},
    "slower_teacher": {"stage3.ema": 0.999},
    "teacher_warmup": {"stage3.ema_warmup": True},
    "class_crops": {"data.class_crops": 0.33},
}
# Measured against the default before CutMix joined it (no_cutmix): the first switches,
# a lighter or fading anchor, and stage 3 for other durations than the cpu preset's 1,200
# steps (one 2,400-step stage 3 kept at every shorter one, which
# tools/check_stage3_stopping.py scores the stopping rule on).
BEFORE_CUTMIX = {
    **{name: SWITCHES[name] for name in (
        "no_guard", "no_anchor", "windowed_inference", "eight_views", "teacher_four_views",
        "class_balanced_confidence", "slower_teacher", "teacher_warmup", "class_crops")},
    "light_anchor": {"stage3.anchor": 0.3},
    "fading_anchor": {"stage3.anchor_fade": 600},  # gone halfway through stage 3
    **{f"stage3_{steps}": {"stage3.steps": steps} for steps in STAGE3_STEPS},
}
SWITCHES.update({f"no_cutmix_{name}": {**switch, **SWITCHES["no_cutmix"]} for name, switch in BEFORE_CUTMIX.items()})
# At the tiny size (the test suite runs every study) one variant per kind of sharing is enough.
TINY = ("default", "paper", "no_anchor", "eight_views")


def sweep(size: str) -> Sweep:
    base, phantom = sized(size)
    names = FAMILIES[size]
    volumes = {name: family(name, phantom.shape) for name in names}
    classes = {name: {"pseudo.classes": CLASSES[name]} for name in names}
    chosen = {name: {**DEFAULT, **switch} for name, switch in SWITCHES.items() if size != "tiny" or name in TINY}
    return Sweep("self_correction", base, volumes, variants(volumes, chosen, SEEDS[size], classes))
