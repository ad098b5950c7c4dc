"""A few labelled slices: how stage 3 grows with them, and which sampler should choose them.

An oracle stands in for the person who labels: ``sparse.oracle_slices`` whole slices of
the ground truth, chosen by one of ``srjax sample``'s samplers (random, TypiClust,
ProbCover, DIDS) on tile statistics of the slices alone, before any net is trained
(``srjax.sparse``). Stages 2 and 3 learn those pixels with the supervised term of
Unbiased Teacher that the paper drops for want of labels; ``none`` is srjax's default,
with no labels. This is the experiment that says whether diversity sampling earns its
keep here: with one volume there is no displacement between time steps, so DIDS picks by
embedding distance alone (α = 1 in effect).

Every member of one family and seed shares stage 1; each trains its own stage 2 and 3
(the labels differ). To keep the study within reach of a 2-core machine, stage 2 and
stage 3 run 600 steps each at the cpu size (half the cpu preset's), on the magnesium
(drift, a thin class) and rock (a rare phase) families. labelled_slices.png draws stage-3
mIoU against the labelled slices, a line per sampler.
"""

from srjax.analysis.samplers import METHODS
from srjax.phantom import CLASSES, family
from srjax.sweep import Sweep, sized, variants

SEEDS = {"tiny": (0,), "cpu": (0, 1, 2, 3, 4), "paper": (0, 1, 2, 3, 4)}
FAMILIES = {"tiny": ("magnesium",), "cpu": ("magnesium", "rock"), "paper": ("magnesium", "rock")}
SLICES = {"tiny": (1,), "cpu": (1, 3, 10), "paper": (1, 3, 10)}
STEPS = {"tiny": {}, "cpu": {"stage2.steps": 600, "stage3.steps": 600}, "paper": {}}


def sweep(size: str) -> Sweep:
    base, phantom = sized(size)
    names = FAMILIES[size]
    volumes = {name: family(name, phantom.shape) for name in names}
    classes = {name: {"pseudo.classes": CLASSES[name]} for name in names}
    chosen = {"none": dict(STEPS[size])}
    for count in SLICES[size]:
        for sampler in METHODS if size != "tiny" else ("dids",):
            chosen[f"{sampler}_{count}"] = {**STEPS[size], "sparse.oracle_slices": count, "sparse.sampler": sampler}
    return Sweep("sparse_labels", base, volumes, variants(volumes, chosen, SEEDS[size], classes),
                 figures=("labelled_slices",))
