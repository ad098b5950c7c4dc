"""The stage-3 stopping rule against hand-computed steps."""

import numpy as np

from srjax.stopping import levelled_off


def _windows(*means, window=300):
    return np.repeat(means, window).tolist()


def test_stops_at_the_end_of_the_first_window_that_rises_by_less_than_the_tolerance():
    assert levelled_off(_windows(0.5, 0.6, 0.601, 0.7)) == 900
    assert levelled_off(_windows(0.5, 0.49, 0.7)) == 600  # a falling share has levelled off too


def test_runs_to_the_end_while_the_share_keeps_rising():
    assert levelled_off(_windows(0.5, 0.51, 0.52, 0.53)) == 1200
    assert levelled_off(_windows(0.5, 0.5)[:450]) == 450  # under two whole windows: nothing to compare


def test_window_and_tolerance_are_the_callers():
    kept = _windows(0.5, 0.51, 0.515, 0.6, window=10)
    assert levelled_off(kept, window=10, tolerance=0.02) == 20
    assert levelled_off(kept, window=10, tolerance=0.006) == 30
    assert levelled_off(kept, window=10, tolerance=0.002) == 40
