"""What a run found, in numbers a scientist reads: each class's share of the volume
(and physical volume), the teacher's confidence per class, how much each stage
changed the labels, warnings when something looks wrong, and, with ground truth,
the scores. All of it from one pass over the label volumes.
"""

from __future__ import annotations

import itertools

import numpy as np

from srjax import io
from srjax.metrics import score
from srjax.progress import bar as progress_bar

STAGES = (("pseudo", "pseudo labels"), ("stage2", "stage 2"), ("stage3", "stage 3"))
CONFIDENCE_BINS = 20
# Warn when stage 2 reproduces less than this share of its own pseudo labels: it has not learned them.
MIN_AGREEMENT = 0.8
# A class holding at least MIN_SHARE of the pseudo labels "vanishes" when a stage keeps
# under VANISH_RATIO of that share, and is "not trained" in stage 3 when the confident
# pixels it gets are under KEPT_RATIO of that share.
MIN_SHARE = 1e-3
VANISH_RATIO = 0.1
KEPT_RATIO = 0.05


def _grow(matrix: np.ndarray, rows: int, cols: int) -> np.ndarray:
    if rows <= matrix.shape[0] and cols <= matrix.shape[1]:
        return matrix
    return np.pad(matrix, ((0, max(rows - matrix.shape[0], 0)), (0, max(cols - matrix.shape[1], 0))))


def tally(volumes: dict, confidence=None, confidence_of: str = "stage3", progress: bool = False) -> dict:
    """One pass over the slices of the label ``volumes`` (name -> TensorStore): the
    confusion matrix of every pair (in the order given) and, with ``confidence``, its
    histogram and its sum per class of ``confidence_of``."""
    names = list(volumes)
    pairs = {pair: np.zeros((0, 0), np.int64) for pair in itertools.combinations(names, 2)}
    histogram = np.zeros(CONFIDENCE_BINS, np.int64)
    confidence_sum = np.zeros(0)
    depth = next(iter(volumes.values())).shape[0]
    for z in progress_bar(range(depth), desc="summary", unit="slice", disable=not progress):
        labels = {name: io.read(volume[z], name).astype(np.int64).ravel() for name, volume in volumes.items()}
        top = {name: int(values.max()) + 1 for name, values in labels.items()}
        for (a, b), matrix in pairs.items():
            matrix = pairs[a, b] = _grow(matrix, top[a], top[b])
            rows, cols = matrix.shape
            matrix += np.bincount(labels[a] * cols + labels[b], minlength=rows * cols).reshape(rows, cols)
        if confidence is not None:
            values = io.read(confidence[z], "confidence").ravel() / io.CONFIDENCE_SCALE
            histogram += np.histogram(values, CONFIDENCE_BINS, (0.0, 1.0))[0]
            per_class = np.bincount(labels[confidence_of], values)
            confidence_sum = np.pad(confidence_sum, (0, max(len(per_class) - len(confidence_sum), 0)))
            confidence_sum[: len(per_class)] += per_class
    return {"pairs": pairs, "histogram": histogram, "confidence_sum": confidence_sum}


def _square(matrix: np.ndarray, rows: int, cols: int) -> np.ndarray:
    return _grow(matrix, rows, cols)[:rows, :cols]


def summarise(counts: dict, classes: int, class_names: list[str], voxel_size=None, unit: str | None = None,
              kept_by_class=None) -> dict:
    """The summary of a run from ``tally``'s counts over pseudo, stage2 and stage3 (and truth)."""
    pairs = counts["pairs"]
    confusion = {pair: _square(pairs[pair], classes, classes) for pair in
                 (("pseudo", "stage2"), ("pseudo", "stage3"), ("stage2", "stage3"))}
    voxels = {"pseudo": confusion["pseudo", "stage2"].sum(1), "stage2": confusion["pseudo", "stage2"].sum(0),
              "stage3": confusion["pseudo", "stage3"].sum(0)}
    total = float(voxels["pseudo"].sum())
    voxel_volume = float(np.prod(voxel_size)) if voxel_size is not None else None
    confidence_sum = np.pad(counts["confidence_sum"], (0, classes))[:classes]
    per_class = []
    for c in range(classes):
        entry = {
            "id": c,
            "name": class_names[c],
            "fraction": {stage: float(voxels[stage][c] / total) for stage, _ in STAGES},
            "mean_confidence": float(confidence_sum[c] / voxels["stage3"][c]) if voxels["stage3"][c] else None,
            "agreement": {
                f"{a} -> {b}": float(m[c, c] / m[c].sum()) if m[c].sum() else None for (a, b), m in confusion.items()
            },
        }
        if voxel_volume is not None:
            entry["volume"] = float(voxels["stage3"][c] * voxel_volume)
        if kept_by_class is not None:
            entry["stage3_trained_share"] = float(kept_by_class[c])
        per_class.append(entry)
    histogram = counts["histogram"]
    summary = {
        "voxels": int(total),
        "classes": per_class,
        "agreement": {f"{a} -> {b}": float(np.trace(m) / total) for (a, b), m in confusion.items()},
        "mean_confidence": float(confidence_sum.sum() / total),
        "confidence_histogram": {"edges": np.linspace(0, 1, len(histogram) + 1).tolist(),
                                 "counts": histogram.tolist()},
    }
    if voxel_volume is not None:
        summary["volume_unit"] = f"{unit}^3" if unit else "voxel-size units^3"
    summary["warnings"] = warnings(summary)
    return summary


def warnings(summary: dict) -> list[str]:
    """What a scientist should look at before trusting the labels."""
    found = []
    agreement = summary["agreement"]["pseudo -> stage2"]
    if agreement < MIN_AGREEMENT:
        found.append(f"stage 2 reproduces only {100 * agreement:.1f}% of its pseudo labels (below "
                     f"{100 * MIN_AGREEMENT:.0f}%): it has not learned them; train stage 2 longer or check the classes")
    for entry in summary["classes"]:
        share = entry["fraction"]["pseudo"]
        if share < MIN_SHARE:
            continue
        kept = entry["agreement"]["pseudo -> stage2"]
        if kept < MIN_AGREEMENT:
            found.append(f"stage 2 keeps only {100 * kept:.1f}% of {entry['name']}'s pseudo-label voxels (below "
                         f"{100 * MIN_AGREEMENT:.0f}%): the class is being lost; set data.class_crops=0.33 "
                         "or train stage 2 longer")
        for stage, title in STAGES[1:]:
            if entry["fraction"][stage] < VANISH_RATIO * share:
                found.append(f"{entry['name']} vanishes in {title}: {100 * share:.2f}% of the voxels in the pseudo "
                             f"labels, {100 * entry['fraction'][stage]:.3f}% in {title}")
        trained = entry.get("stage3_trained_share")
        if trained is not None and trained < KEPT_RATIO * share:
            found.append(f"stage 3 trained {entry['name']} on almost no pixels: the teacher was confident on "
                         f"{100 * trained:.3f}% of the crop pixels for it, against {100 * share:.2f}% of the voxels "
                         "in the pseudo labels; lower stage3.confidence or check the classes")
    return found


def scores(counts: dict, classes: int) -> dict:
    """Pixel accuracy and mIoU of each stage against the truth (``metrics.score``), and the
    confusion matrix they come from (rows: predicted ids, columns: true classes)."""
    pairs = counts["pairs"]
    num_true = max(pairs[stage, "truth"].shape[1] for stage, _ in STAGES)
    matrices = {stage: _square(pairs[stage, "truth"], classes, num_true) for stage, _ in STAGES}
    return {stage: dict(score(matrix), confusion=matrix.tolist()) for stage, matrix in matrices.items()}
