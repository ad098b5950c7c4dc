"""Named presets: each a function returning a frozen config; ``--config``/``--set`` go on top.

``paper`` is the paper's setting (512² crops, batch 16, 7 slices, 200 + 200 epochs, the
~2M-parameter net): for an accelerator. ``cpu`` is sized so a small volume runs in
minutes on a laptop's CPU. ``tiny`` is for tests: seconds per stage.
"""

from __future__ import annotations

from srjax.config import Config, apply_overrides
from srjax.errors import SrjaxError


def paper() -> Config:
    return Config()


def cpu() -> Config:
    """64² crops, batch 8, the 0.43M-parameter ``cpu`` width, 1,200 + 1,200 steps.

    1,200 steps are the paper's 200 epochs on the 48-slice demo phantom, whatever the
    volume's depth, so a run takes minutes on a laptop. That is about a tenth of the
    paper's steps; at that budget strong augmentation with probability 0.5 erases the
    demo's thin intergrowth class before the student learns it back, 0.25 keeps it
    (README, "Demo").
    """
    return apply_overrides(Config(), [
        "checkpoint_every=300",
        "data.crop=64",
        "data.batch_size=8",
        "model.width=cpu",
        "stage2.steps=1200",
        "stage3.steps=1200",
        "stage3.strong_probability=0.25",
    ])


def tiny() -> Config:
    return apply_overrides(Config(), [
        "checkpoint_every=2",
        "predict_batch=4",
        "data.slices=3",
        "data.crop=32",
        "data.batch_size=4",
        "data.read_threads=1",
        "model.width=tiny",
        "stage2.epochs=1",
        "stage3.epochs=1",
    ])


PRESETS = {"paper": paper, "cpu": cpu, "tiny": tiny}

# Recipes go on top of a preset (which sets the sizes). ``paper`` is the paper's net and
# stage 3 as published: the U-Net without skips, no loss against the pseudo labels, no
# CutMix, one confidence threshold for all classes, whole slices labelled at once, no guard.
RECIPES = {
    "paper": ("model.name=unet_noskip", "stage3.confidence=0.5", "stage3.ema=0.99", "stage3.anchor=0",
              "stage3.cutmix=0", "stage3.teacher_views=1", "stage3.class_keep=0", "predict_tiled=false",
              "predict_views=1", "data.class_crops=0", "guard=0"),
}


def with_recipe(config: Config, name: str) -> Config:
    if name not in RECIPES:
        raise SrjaxError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return apply_overrides(config, list(RECIPES[name]))


def default_preset() -> tuple[str, str]:
    """``paper`` on an accelerator, ``cpu`` otherwise; and why, to say at the start of a run."""
    import jax

    backend = jax.default_backend()
    if backend == "cpu":
        return "cpu", "no accelerator found; pass --preset paper for the paper's sizes"
    return "paper", f"running on {backend}"


def get(name: str) -> Config:
    if name not in PRESETS:
        raise SrjaxError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()
