"""A training stage's optimizer, built from its config.

The peak learning rate is injected as a hyperparameter (``optax.inject_hyperparams``):
it lives in the optimizer state as a number, not in the traced program, so runs that
differ only in it share one compiled step. The schedule's shape (warm-up, cosine decay)
multiplies it and depends only on the step count.
"""

from __future__ import annotations

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


def make_optimizer(settings, total_steps: int) -> optax.GradientTransformation:
    """``settings`` is a stage's config (optimizer, learning_rate, schedule, warmup_steps, weight_decay)."""

    def build(learning_rate):
        return optax.chain(_direction(settings), optax.scale_by_schedule(schedule_shape(settings, total_steps)),
                           optax.scale_by_learning_rate(learning_rate))

    return optax.inject_hyperparams(build)(learning_rate=settings.learning_rate)
