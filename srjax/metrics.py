"""Scores against ground truth: pixel accuracy and mIoU, both excluding the background.

Predicted ids are arbitrary cluster ids, so they are first matched to ground-truth
classes by maximum overlap: one-to-one (the assignment with the largest total overlap)
when there are no more predicted ids than true classes, and many-to-one (each id to
the class it overlaps most) when K exceeds the true class count. Accuracy counts the non-background ground-truth pixels whose
mapped prediction is right; mIoU averages IoU over the non-background true classes,
where a background pixel predicted as class c counts against c.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from srjax.io import as_volume, read


def confusion(pred, truth, num_pred: int, num_true: int) -> np.ndarray:
    """[num_pred, num_true] pixel counts, accumulated slice by slice."""
    counts = np.zeros((num_pred, num_true), np.int64)
    pred, truth = as_volume(pred), as_volume(truth)
    for z in range(pred.shape[0]):
        p = read(pred[z], "prediction").astype(np.int64).ravel()
        t = read(truth[z], "truth").astype(np.int64).ravel()
        counts += np.bincount(p * num_true + t, minlength=num_pred * num_true).reshape(num_pred, num_true)
    return counts


def match_classes(counts: np.ndarray) -> np.ndarray:
    """For each predicted id, the true class it is matched to (see the module docstring)."""
    num_pred, num_true = counts.shape
    if num_pred > num_true:
        return counts.argmax(axis=1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    mapping = np.empty(num_pred, np.int64)
    mapping[rows] = cols
    return mapping


def score(counts: np.ndarray, background: int = 0) -> dict:
    """Pixel accuracy and mIoU without ``background`` from a [pred, true] confusion matrix."""
    mapping = match_classes(counts)
    num_true = counts.shape[1]
    matched = np.zeros((num_true, num_true), np.int64)
    np.add.at(matched, mapping, counts)
    foreground = [c for c in range(num_true) if c != background]
    correct = sum(matched[c, c] for c in foreground)
    accuracy = correct / max(counts[:, foreground].sum(), 1)
    ious = {}
    for c in foreground:
        union = matched[c, :].sum() + matched[:, c].sum() - matched[c, c]
        if union:
            ious[c] = matched[c, c] / union
    return {
        "pixel_accuracy": float(accuracy),
        "miou": float(np.mean(list(ious.values()))) if ious else 0.0,
        "iou": {str(c): float(v) for c, v in ious.items()},
        "mapping": [int(m) for m in mapping],
    }
