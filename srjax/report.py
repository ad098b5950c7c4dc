"""What people look at: the score table, the printed summary, the panel and report.html."""

from __future__ import annotations

import base64
import html
import io as bytes_io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from srjax.colours import class_colour  # noqa: E402
from srjax.outputs import atomic_path  # noqa: E402
from srjax.stopping import levelled_off  # noqa: E402
from srjax.summary import STAGES  # noqa: E402

SCORING = ("scores without the background class; predicted ids matched to true classes by maximum overlap "
           "(one-to-one, or many-to-one when K exceeds the true class count)")


def score_table(metrics: dict) -> str:
    lines = [SCORING, f"{'':16}{'pixel accuracy':>16}{'mIoU':>10}"]
    for key, title in STAGES:
        if key in metrics:
            m = metrics[key]
            lines.append(f"{title:16}{100 * m['pixel_accuracy']:>15.2f}%{100 * m['miou']:>9.2f}%")
    return "\n".join(lines)


def k_curve(curve: dict) -> str:
    """The ``--classes auto`` curve and the K it chose."""
    values = curve.get("bic", curve.get("sse"))
    lines = [f"choosing K by the {curve['rule']}:"]
    lines += [f"  K={k}: {value:.6g}{'   <- chosen' if k == curve['chosen'] else ''}"
              for k, value in zip(curve["k"], values)]
    return "\n".join(lines)


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def summary_table(summary: dict) -> str:
    """Per class: share of the volume at each stage, physical volume, confidence, agreement."""
    has_volume = "volume_unit" in summary
    head = f"{'class':24}{'pseudo':>9}{'stage 2':>9}{'stage 3':>9}"
    volume_head = f"volume ({summary['volume_unit']})" if has_volume else ""
    volume_width = len(volume_head) + 2
    head += f"{volume_head:>{volume_width}}"
    head += f"{'confidence':>12}{'kept p->2':>11}{'kept 2->3':>11}"
    lines = ["volume fraction of each class, stage-3 mean confidence, and the share of each class's voxels a "
             "stage keeps in that class", head]
    for entry in summary["classes"]:
        f, agree = entry["fraction"], entry["agreement"]
        line = f"{entry['name'][:23]:24}{_percent(f['pseudo']):>9}{_percent(f['stage2']):>9}{_percent(f['stage3']):>9}"
        line += f"{entry['volume']:>{volume_width}.4g}" if has_volume else ""
        confidence = entry["mean_confidence"]
        line += f"{'-' if confidence is None else f'{confidence:.3f}':>12}"
        line += f"{_percent(agree['pseudo -> stage2']):>11}{_percent(agree['stage2 -> stage3']):>11}"
        lines.append(line)
    agree = summary["agreement"]
    lines.append(f"voxels agreeing: pseudo/stage 2 {_percent(agree['pseudo -> stage2'])}, stage 2/stage 3 "
                 f"{_percent(agree['stage2 -> stage3'])}, pseudo/stage 3 {_percent(agree['pseudo -> stage3'])}; "
                 f"mean confidence {summary['mean_confidence']:.3f}")
    lines += [f"warning: {text}" for text in summary["warnings"]]
    return "\n".join(lines)


CHANGED = ListedColormap(["#1e1e1e", "#ff4040"])  # unchanged, changed


def class_colormap(num_classes: int) -> ListedColormap:
    return ListedColormap([np.array(class_colour(c)) / 255 for c in range(max(num_classes, 2))])


def _legend(fig, names: list[str]) -> None:
    handles = [Patch(color=np.array(class_colour(c)) / 255, label=name) for c, name in enumerate(names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(names), 6), fontsize=8, frameon=False)


def _label_axes(axes, image, columns, names, title=None):
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title(title or "slice", fontsize=9)
    cmap = class_colormap(len(names))
    for ax, (name, labels) in zip(axes[1:], columns):
        if labels.dtype == bool:  # a map of where two label volumes differ
            ax.imshow(labels, cmap=CHANGED, vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(labels, cmap=cmap, vmin=-0.5, vmax=cmap.N - 0.5, interpolation="nearest")
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.set_axis_off()


def panel(path: Path, image, columns: list[tuple[str, np.ndarray]], names: list[str], title: str) -> None:
    """One row: the slice, then one label map per column, in the class colours, with a legend."""
    fig, axes = plt.subplots(1, 1 + len(columns), figsize=(3.2 * (1 + len(columns)), 4.0), squeeze=False)
    _label_axes(axes[0], image, columns, names)
    fig.suptitle(title, fontsize=9)
    _legend(fig, names)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    save_figure(fig, path)


def overlay(path: Path, image, heat, title: str) -> None:
    """The slice, and the slice with ``heat`` (in [0, 1]) laid over it."""
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.8))
    for ax in axes:
        ax.imshow(image, cmap="gray")
        ax.set_axis_off()
    shown = axes[1].imshow(heat, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
    fig.colorbar(shown, ax=axes[1], fraction=0.046)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _png(fig) -> str:
    buffer = bytes_io.BytesIO()
    fig.savefig(buffer, dpi=100, format="png")
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _planes_figure(planes: list[tuple[str, np.ndarray, list]], names: list[str]) -> str:
    """One row per plane: the image, then each label map."""
    columns = 1 + len(planes[0][2])
    fig, axes = plt.subplots(len(planes), columns, figsize=(2.6 * columns, 2.6 * len(planes) + 0.6), squeeze=False)
    for row, (title, image, labels) in zip(axes, planes):
        _label_axes(row, image, labels, names, title)
    _legend(fig, names)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _png(fig)


def _fractions_figure(summary: dict) -> str:
    """Each predicted class's share of the voxels (its own ids: not matched to true classes)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    width = 0.8 / len(STAGES)
    names = [entry["name"] for entry in summary["classes"]]
    ids = np.arange(len(names))
    for i, (stage, title) in enumerate(STAGES):
        shares = [100 * entry["fraction"][stage] for entry in summary["classes"]]
        ax.bar(ids + (i - 1) * width, shares, width, label=title)
    ax.set_xticks(ids, [name.split(" (")[0] for name in names], fontsize=8)
    ax.set_ylabel("% of voxels")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _history_figure(history: dict) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.0))
    for ax, stage in zip(axes, ("stage2", "stage3")):
        steps = history.get(stage, [])
        ax.plot([h["loss"] for h in steps], lw=0.8, label="loss")
        if steps and "kept" in steps[0]:
            kept = [h["kept"] for h in steps]
            ax.plot(kept, lw=0.8, label="share of pixels kept")
            if stage == "stage3":
                ax.axvline(levelled_off(kept), color="grey", ls=":", lw=0.8, label="kept share levelled off")
        if steps and "pseudo_agreement" in steps[0]:
            ax.plot([h["pseudo_agreement"] for h in steps], lw=0.8, label="teacher agrees with pseudo labels")
        ax.set_title(dict(STAGES)[stage], fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _confidence_figure(summary: dict) -> str:
    histogram = summary["confidence_histogram"]
    edges, counts = np.array(histogram["edges"]), np.array(histogram["counts"])
    fig, ax = plt.subplots(figsize=(4.8, 3.0))
    ax.bar(edges[:-1], 100 * counts / max(counts.sum(), 1), np.diff(edges), align="edge")
    ax.set_xlabel("teacher's max class probability")
    ax.set_ylabel("% of voxels")
    fig.tight_layout()
    return _png(fig)


def _table(rows: list[list], head: list[str]) -> str:
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def html_report(path: Path, title: str, metrics: dict, history: dict, planes, names: list[str]) -> None:
    """A self-contained report.html: summary, warnings, scores, three planes, fractions, curves."""
    summary = metrics["summary"]
    rows = []
    for entry in summary["classes"]:
        f, agree = entry["fraction"], entry["agreement"]
        rows.append([entry["name"], _percent(f["pseudo"]), _percent(f["stage2"]), _percent(f["stage3"]),
                     f"{entry['volume']:.4g}" if "volume" in entry else "-",
                     "-" if entry["mean_confidence"] is None else f"{entry['mean_confidence']:.3f}",
                     _percent(agree["pseudo -> stage2"]), _percent(agree["stage2 -> stage3"])])
    head = ["class", "pseudo", "stage 2", "stage 3", f"volume ({summary.get('volume_unit', 'voxel size unknown')})",
            "mean confidence", "kept pseudo → stage 2", "kept stage 2 → stage 3"]
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if summary["warnings"]:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in summary["warnings"])
                     + "</ul>")
    parts += ["<h2>Classes</h2>", _table(rows, head)]
    if "stage3" in metrics and "pixel_accuracy" in metrics.get("stage3", {}):
        score_rows = [[t, f"{100 * metrics[k]['pixel_accuracy']:.2f}%", f"{100 * metrics[k]['miou']:.2f}%"]
                      for k, t in STAGES]
        parts += ["<h2>Scores against the ground truth</h2>", f"<p>{html.escape(SCORING)}</p>",
                  _table(score_rows, ["", "pixel accuracy", "mIoU"])]
    parts += ["<h2>Three planes</h2>", _planes_figure(planes, names),
              "<h2>Class fractions</h2>", _fractions_figure(summary),
              "<h2>Training</h2>", _history_figure(history),
              "<h2>Confidence</h2>", _confidence_figure(summary)]
    seconds = metrics.get("seconds", {})
    parts.append("<h2>Time</h2>" + _table([[k, f"{v:.1f} s"] for k, v in seconds.items()], ["stage", "time"]))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>" \
           f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    with atomic_path(path) as tmp:
        tmp.write_text(page)
