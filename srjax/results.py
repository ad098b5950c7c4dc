"""A sweep's results, rebuilt from its run directories and the rows it carries from
earlier sweep directories of the same study (``carried.json``, see ``srjax.sweep``).

``results.csv`` and ``results.json`` hold one row per finished member (its axes, seed,
pixel accuracy, mIoU, per-class IoU and per-class voxel share of the pseudo labels,
stage 2 and stage 3, the mean confidence, the step at which stage 3's kept share levelled off,
and the seconds of every step); ``results.md`` a table per axis with
mean ± sd over the members that share a value; ``results.png`` the mIoU against each
axis, one point per member.
"""

from __future__ import annotations

import csv
import io as text_io
import json
from pathlib import Path

import numpy as np

from srjax import report, rundir
from srjax.outputs import atomic_path, write_json
from srjax.summary import STAGES

SCORES = ("pixel_accuracy", "miou")


def _row(member: dict, run: rundir.RunDir, axes: list[str]) -> dict:
    metrics = run.read(run.metrics)
    overrides = member["overrides"]
    row = {"member": member["name"], "volume": member["volume"]}
    named = {"volume": member["volume"], "variant": member.get("variant", "")}
    row.update({axis: named[axis] if axis in named else overrides.get(axis) for axis in axes})
    row["seed"] = overrides.get("seed", 0)
    for stage, _ in STAGES:
        scores = metrics.get(stage, {})
        for score in SCORES:
            row[f"{stage}.{score}"] = scores.get(score)
        for cls, iou in scores.get("iou", {}).items():
            row[f"{stage}.iou.{cls}"] = iou
    for entry in metrics["summary"]["classes"]:  # the share of the voxels each stage gives each class
        row.update({f"{stage}.share.{entry['id']}": entry["fraction"][stage] for stage, _ in STAGES})
    row["stage2.mean_confidence"] = metrics["summary"].get("stage2_mean_confidence")
    row["stage3.mean_confidence"] = metrics["summary"]["mean_confidence"]
    row["stage3.levelled_off"] = metrics.get("stage3_levelled_off")
    row.update({f"seconds.{step}": seconds for step, seconds in metrics["seconds"].items()})
    return row


def carry(out: Path, rows: dict[str, dict]) -> None:
    """Add ``rows`` (member name -> row) of members finished in another sweep directory."""
    path = out / "carried.json"
    carried = json.loads(path.read_text()) if path.exists() else {}
    if rows:
        write_json(path, {**carried, **rows})


def collect(out: Path) -> tuple[dict, list[dict]]:
    """The sweep record and a row for every member finished in ``out`` or carried into it."""
    record = json.loads((out / "sweep.json").read_text())
    carried_path = out / "carried.json"
    carried = json.loads(carried_path.read_text()) if carried_path.exists() else {}
    rows = []
    for member in record["members"]:
        run = rundir.RunDir(out / "runs" / member["name"])
        if run.finished:
            rows.append(_row(member, run, record["axes"]))
        elif member["name"] in carried:
            rows.append(carried[member["name"]])
    return record, rows


def _mean_sd(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def _table(axis: str, rows: list[dict], columns: list[str]) -> list[str]:
    """Markdown rows of mean ± sd of ``columns`` for each value of ``axis``."""
    lines = ["| " + " | ".join([axis, "n", *columns]) + " |", "|" + "---|" * (len(columns) + 2)]
    for value in dict.fromkeys(row.get(axis, "all") for row in rows):
        chosen = [row for row in rows if row.get(axis, "all") == value]
        cells = [str(value), str(len(chosen))] + [_mean_sd([row.get(c) for row in chosen]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _class_columns(rows: list[dict]) -> list[str]:
    """The per-class IoU columns, class by class, pseudo then stage 2 then stage 3."""
    classes = sorted({key.split(".")[-1] for row in rows for key in row if ".iou." in key}, key=int)
    return [f"{stage}.iou.{c}" for c in classes for stage, _ in STAGES]


def markdown(record: dict, rows: list[dict]) -> str:
    """A table per axis (one for the whole sweep when only the seed varies): mean ± sd over
    members; with several volumes, also each other axis on each volume alone, and there the
    IoU of every class."""
    lines = [f"# Sweep {record['sweep']} (size {record['size']})", "",
             f"{len(rows)} of {len(record['members'])} members finished. Mean ± sample sd over the members "
             "with each value (seeds, and the other axes' values). Seconds are wall time: a stage that one "
             "member computed and others took counts only for the first; a population's, for each member."]
    columns = [f"{stage}.{score}" for stage, _ in STAGES for score in SCORES]
    columns += ["stage2.mean_confidence", "stage3.mean_confidence", "seconds.stage1", "seconds.stage2",
                "seconds.stage3"]
    axes = record["axes"] or ["all"]
    for axis in axes:
        lines += ["", f"## {axis}", "", *_table(axis, rows, columns)]
    if "volume" in axes:
        for volume in dict.fromkeys(row["volume"] for row in rows):
            chosen = [row for row in rows if row["volume"] == volume]
            for axis in [a for a in axes if a != "volume"]:
                lines += ["", f"## {axis} on {volume}", "", *_table(axis, chosen, columns[:6]),
                          "", f"IoU per class ({volume}):", "", *_table(axis, chosen, _class_columns(chosen))]
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(key for row in rows for key in row))
    buffer = text_io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def figure(path: Path, record: dict, rows: list[dict]) -> None:
    """mIoU of each stage against each axis, one point per member."""
    axes = record["axes"] or ["all"]
    fig, panels = report.plt.subplots(1, len(axes), figsize=(4.5 * len(axes), 3.6), squeeze=False)
    for panel, axis in zip(panels[0], axes):
        values = list(dict.fromkeys(str(row.get(axis, "all")) for row in rows))
        for offset, (stage, title) in zip((-0.2, 0.0, 0.2), STAGES):
            x = [values.index(str(row.get(axis, "all"))) + offset for row in rows]
            panel.scatter(x, [row.get(f"{stage}.miou") for row in rows], s=14, label=title)
        panel.set_xticks(range(len(values)), values, rotation=30, ha="right", fontsize=8)
        panel.set_xlabel(axis)
        panel.set_ylabel("mIoU")
    panels[0][0].legend(fontsize=8)
    fig.suptitle(f"sweep {record['sweep']} ({record['size']})", fontsize=9)
    fig.tight_layout()
    report.save_figure(fig, path)


def confusion_figure(path: Path, record: dict, rows: list[dict], out: Path) -> None:
    """For each member finished in ``out``: which true class the voxels of each predicted id
    belong to, in the pseudo labels and after stage 3 (rows sum to 1)."""
    rows = [row for row in rows if rundir.RunDir(out / "runs" / row["member"]).finished]
    stages = [("pseudo", "pseudo labels"), ("stage3", "stage 3")]
    fig, panels = report.plt.subplots(len(rows), 2, figsize=(7, 2.6 * len(rows)), squeeze=False)
    for row, pair in zip(rows, panels):
        run = rundir.RunDir(out / "runs" / row["member"])
        metrics = run.read(run.metrics)
        for panel, (stage, title) in zip(pair, stages):
            counts = np.asarray(metrics[stage]["confusion"], np.float64)
            shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
            panel.imshow(shares, cmap="viridis", vmin=0, vmax=1, aspect="auto")
            panel.set_xlabel("true class")
            panel.set_ylabel("predicted id")
            panel.set_title(f"{row['member']}: {title}", fontsize=7)
    fig.suptitle(f"sweep {record['sweep']}: share of each predicted id's voxels per true class", fontsize=9)
    fig.tight_layout()
    report.save_figure(fig, path)


def by_labelled_slices(record: dict, rows: list[dict], score: str = "stage3.miou") -> dict:
    """volume -> sampler -> [(labelled slices, mean, sample sd, seeds)] of ``score``, from
    the members' ``sparse.oracle_slices`` and ``sparse.sampler``; the members with no
    labels (0 slices) start every sampler's list."""
    settings = {m["name"]: {**record["base"], **m["config"]} for m in record["members"]}
    counts = sorted({settings[row["member"]]["sparse.oracle_slices"] for row in rows})
    table = {}
    for volume in dict.fromkeys(row["volume"] for row in rows):
        here = [(settings[row["member"]], row[score]) for row in rows if row["volume"] == volume]
        samplers = dict.fromkeys(c["sparse.sampler"] for c, _ in here if c["sparse.oracle_slices"])
        table[volume] = {}
        for sampler in samplers:
            points = []
            for count in counts:
                scores = [value for c, value in here if c["sparse.oracle_slices"] == count
                          and (count == 0 or c["sparse.sampler"] == sampler)]
                if scores:
                    sd = float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0
                    points.append((count, float(np.mean(scores)), sd, len(scores)))
            table[volume][sampler] = points
    return table


def labelled_slices_figure(path: Path, record: dict, rows: list[dict], out: Path) -> None:
    """Stage-3 mIoU against the number of labelled slices, a line per sampler and a panel
    per volume, mean ± sample sd over seeds."""
    table = by_labelled_slices(record, rows)
    fig, panels = report.plt.subplots(1, len(table), figsize=(4.5 * len(table), 3.6), squeeze=False)
    for panel, (volume, samplers) in zip(panels[0], table.items()):
        counts = sorted({count for points in samplers.values() for count, *_ in points})
        for offset, (sampler, points) in zip(np.linspace(-0.15, 0.15, len(samplers)), samplers.items()):
            x = [counts.index(count) + offset for count, *_ in points]
            panel.errorbar(x, [p[1] for p in points], yerr=[p[2] for p in points], marker="o", ms=4, capsize=3,
                           label=sampler)
        panel.set_xticks(range(len(counts)), [str(c) for c in counts])
        panel.set_xlabel("labelled slices")
        panel.set_ylabel("stage-3 mIoU")
        panel.set_title(volume, fontsize=9)
    panels[0][0].legend(fontsize=8)
    fig.suptitle(f"sweep {record['sweep']} ({record['size']}): mean ± sd over seeds", fontsize=9)
    fig.tight_layout()
    report.save_figure(fig, path)


FIGURES = {"confusion": confusion_figure, "labelled_slices": labelled_slices_figure}


def write(out: Path) -> list[dict]:
    """Rebuild results.csv/json/md/png (and the sweep's extra figures) from the run directories; return the rows."""
    record, rows = collect(out)
    write_json(out / "results.json", {"sweep": record, "rows": rows})
    for name, text in (("results.csv", _csv(rows)), ("results.md", markdown(record, rows))):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)
    if rows and any(row.get("stage3.miou") is not None for row in rows):
        figure(out / "results.png", record, rows)
        for name in record.get("figures", []):
            FIGURES[name](out / f"{name}.png", record, rows, out)
    return rows
