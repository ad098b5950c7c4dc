"""Table I: every registered architecture on the same pseudo labels (shared stage 1)."""

from srjax.models import MODEL_NAMES
from srjax.sweep import Sweep, grid, sized

SEEDS = {"tiny": (0,), "cpu": (0, 1, 2), "paper": (0, 1, 2, 3, 4)}


def sweep(size: str) -> Sweep:
    base, phantom = sized(size)
    volumes = {"phantom": phantom}
    return Sweep("table1_models", base, volumes, grid(volumes, {"model.name": list(MODEL_NAMES)}, SEEDS[size]))
