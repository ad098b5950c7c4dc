"""When to stop stage 3 without ground truth: once the teacher's kept share levels off.

While stage 3 still corrects the pseudo labels, the share of pixels the teacher labels
above the confidence threshold keeps rising; once the teacher has settled it levels off.
The rule reads only the training history every run logs (``history.json``'s per-step
``kept``), so it can be applied to any finished run; ``tools/check_stage3_stopping.py``
measures against ground truth whether the step it picks is a good one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Fixed before any stage-3 duration was scored: a window of 300 steps (the cpu preset's
# checkpoint interval) and a rise under 0.2 % of the pixels from one window to the next.
WINDOW = 300
TOLERANCE = 0.002


def levelled_off(kept: Sequence[float], window: int = WINDOW, tolerance: float = TOLERANCE) -> int:
    """The step at which the mean of ``kept`` over a window of ``window`` steps first rises
    by less than ``tolerance`` over the window before it; ``len(kept)`` if it never does."""
    whole = len(kept) // window
    means = np.asarray(kept[:whole * window], dtype=np.float64).reshape(whole, window).mean(axis=1)
    for k in range(1, whole):
        if means[k] - means[k - 1] < tolerance:
            return (k + 1) * window
    return len(kept)
