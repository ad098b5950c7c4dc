"""Table II: every registered loss, at its paper's parameters, for stage 2 and stage 3."""

from srjax.losses import LOSS_NAMES
from srjax.sweep import Sweep, grid, sized

SEEDS = {"tiny": (0,), "cpu": (0, 1, 2), "paper": (0, 1, 2, 3, 4)}


def sweep(size: str) -> Sweep:
    base, phantom = sized(size)
    volumes = {"phantom": phantom}
    return Sweep("table2_losses", base, volumes, grid(volumes, {"loss.name": list(LOSS_NAMES)}, SEEDS[size]))
