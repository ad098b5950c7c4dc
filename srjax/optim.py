"""A training stage's optimizer, built from its config.

The peak learning rate is injected as a hyperparameter (``optax.inject_hyperparams``):
it lives in the optimizer state as a number, not in the traced program, so runs that
differ only in it share one compiled step. The schedule's shape (warm-up, cosine decay)
multiplies it and depends only on the step count.
"""

from __future__ import annotations

import dataclasses

import optax

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")
SGD_MOMENTUM = 0.9


def schedule_shape(settings, total_steps: int):
    """The learning-rate multiplier per step: a linear warm-up to 1, then constant or cosine to 0."""
    warmup = min(settings.warmup_steps, total_steps)
    after = (optax.constant_schedule(1.0) if settings.schedule == "constant"
             else optax.cosine_decay_schedule(1.0, max(total_steps - warmup, 1)))
    if not warmup:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, 1.0, warmup), after], [warmup])


def _direction(settings) -> optax.GradientTransformation:
    """The update direction before the learning rate scales it."""
    if settings.optimizer == "sgd":
        return optax.trace(decay=SGD_MOMENTUM, nesterov=True)
    if settings.optimizer == "adamw":
        return optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(settings.weight_decay))
    return optax.scale_by_adam()


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """Everything that shapes an optimizer's update but the learning rate, which is a value
    in its state: the part a compiled step depends on."""

    optimizer: str
    schedule: str
    warmup_steps: int
    weight_decay: float
    total_steps: int

    @classmethod
    def of(cls, settings, total_steps: int) -> "OptimizerSpec":
        if settings.schedule == "constant":  # the duration matters only where it cuts the warm-up short
            total_steps = min(total_steps, settings.warmup_steps)
        return cls(settings.optimizer, settings.schedule, settings.warmup_steps, settings.weight_decay, total_steps)


def optimizer_from(spec: OptimizerSpec, learning_rate: float) -> optax.GradientTransformation:
    """The optimizer of ``spec``; ``learning_rate`` is the value its state starts with."""

    def build(learning_rate):
        return optax.chain(_direction(spec), optax.scale_by_schedule(schedule_shape(spec, spec.total_steps)),
                           optax.scale_by_learning_rate(learning_rate))

    return optax.inject_hyperparams(build)(learning_rate=learning_rate)


def make_optimizer(settings, total_steps: int) -> optax.GradientTransformation:
    """``settings`` is a stage's config (optimizer, learning_rate, schedule, warmup_steps, weight_decay)."""
    return optimizer_from(OptimizerSpec.of(settings, total_steps), settings.learning_rate)
