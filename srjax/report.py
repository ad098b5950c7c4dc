"""What people look at: the score table and the paper-style panel."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from srjax.io import atomic_path  # noqa: E402

STAGES = (("pseudo", "pseudo labels"), ("stage2", "stage 2"), ("stage3", "stage 3"))


def score_table(metrics: dict) -> str:
    lines = [
        "scores without the background class; predicted ids matched to true classes by maximum overlap\n"
        "(one-to-one, or many-to-one when K exceeds the true class count)",
        f"{'':16}{'pixel accuracy':>16}{'mIoU':>10}",
    ]
    for key, title in STAGES:
        if key in metrics:
            m = metrics[key]
            lines.append(f"{title:16}{100 * m['pixel_accuracy']:>15.2f}%{100 * m['miou']:>9.2f}%")
    return "\n".join(lines)


def panel(path: Path, image, columns: list[tuple[str, np.ndarray]], num_classes: int, title: str) -> None:
    """One row: the slice, then one label map per column, in a shared class colour map."""
    fig, axes = plt.subplots(1, 1 + len(columns), figsize=(3.2 * (1 + len(columns)), 3.6))
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title("slice")
    cmap = plt.get_cmap("tab10", max(num_classes, 2))
    for ax, (name, labels) in zip(axes[1:], columns):
        ax.imshow(labels, cmap=cmap, vmin=-0.5, vmax=max(num_classes, 2) - 0.5, interpolation="nearest")
        ax.set_title(name)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def overlay(path: Path, image, heat, title: str) -> None:
    """The slice, and the slice with ``heat`` (in [0, 1]) laid over it."""
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.8))
    for ax in axes:
        ax.imshow(image, cmap="gray")
        ax.set_axis_off()
    shown = axes[1].imshow(heat, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
    fig.colorbar(shown, ax=axes[1], fraction=0.046)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
