"""``srjax quantify``: every feature of a class, counted and measured, out of core.

One label volume, or several in time order: for each, the class's 3-D connected
components (``components``), a row of measurements per feature (``features``), an
OME-Zarr instance-label image, and a summary like the talk's (count, average major
axis, average volume, volume fraction; in voxels and in physical units).
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srjax import __version__
from srjax.analysis import components as cc
from srjax.analysis import graphs, tables, tracking
from srjax.analysis.features import table as feature_table
from srjax.errors import SrjaxError
from srjax.outputs import absolute, atomic_path, claim_output, write_json
from srjax.sources import Source, open_source, voxel_size_and_unit

SUMMARY = "summary.json"
# What the summary and the size figure read back of a table written as it was computed.
SUMMARY_COLUMNS = ("time", "class_id", "voxels", "volume", "major_axis", "major_axis_voxels", "equivalent_diameter")


@dataclass(frozen=True)
class Step:
    """One class at one time step: how many voxels it has, of how many."""

    time: int
    cls: int
    voxels: int
    shape: tuple


def open_labels(path, name: str = "labels") -> Source:
    source = open_source(path, name)
    if source.dtype.kind not in "ui":
        raise SrjaxError(f"{name} {path} has dtype {source.dtype}; srjax quantify needs integer labels "
                         "(a run's labels.ome.zarr, or any integer label volume)")
    return source


def check_series(sources: list[Source]) -> None:
    shapes = {source.shape for source in sources}
    if len(shapes) > 1:
        raise SrjaxError(f"the label volumes have different shapes {sorted(shapes)}; a time series needs one shape")


def instances_path(root: Path, cls: int, time: int) -> Path:
    return root / "instances" / f"class{cls}" / f"t{time:04d}.ome.zarr"


def measure(labels, classes: list[int], time: int, connectivity: int, min_voxels: int, voxel_size,
            root: Path | None = None, unit: str | None = None, progress: bool = False,
            workers: cc.Workers | None = None, sink=None) -> list[Step]:
    """Components, features and (under ``root``) the instance image of each class of
    ``classes`` in one volume, ``labels`` (a path, or anything ``components`` reads),
    reading it once: the images are painted from the runs kept in a folder under ``root``.
    Feature rows go to ``sink`` (a ``tables.Writer``'s write, a list's append) as their
    components close."""
    shape = cc.volume_shape(labels)
    kept = [[] for _ in classes]

    def closed(index: int, first: int, sums) -> None:
        rows = feature_table(sums, shape, voxel_size, first)
        keep = rows["voxels"] >= min_voxels
        kept[index].append(keep)
        if not keep.all():
            rows = {name: column[keep] for name, column in rows.items()}
        count = len(rows["id"])
        rows = {"time": np.full(count, time, np.int64), "class_id": np.full(count, classes[index], np.int64), **rows}
        sink(rows)

    with contextlib.ExitStack() as stack:
        keep_runs = None if root is None else Path(stack.enter_context(tempfile.TemporaryDirectory(dir=root)))
        found = cc.label_each(labels, classes, connectivity, progress=progress, workers=workers, on_close=closed,
                              keep_runs=keep_runs)
        keep = [np.concatenate(k) for k in kept]
        if root is not None:
            paths = [instances_path(root, cls, time) for cls in classes]
            for path in paths:
                path.parent.mkdir(parents=True, exist_ok=True)
            cc.write_instances(found, paths, voxel_size, unit, progress=progress, keep=keep, workers=workers)
    return [Step(time, cls, c.voxels, c.shape) for cls, c in zip(classes, found)]


def summarise(step: Step, features: tables.Table) -> dict:
    """The step's summary from ``features`` (the columns ``SUMMARY_COLUMNS`` at least, of every step)."""
    rows = (features["time"] == step.time) & (features["class_id"] == step.cls)
    count = int(np.count_nonzero(rows))
    mean = (lambda column: float(features[column][rows].mean()) if count else 0.0)  # noqa: E731
    return {
        "time": step.time, "class": step.cls, "count": count,
        "average_major_axis_voxels": mean("major_axis_voxels"),
        "average_major_axis": mean("major_axis"),
        "average_volume_voxels": mean("voxels"),
        "average_volume": mean("volume"),
        "volume_fraction": step.voxels / float(np.prod(step.shape)),
        "volume_quantiles": dict(zip(("min", "p25", "median", "p75", "max"),
                                     np.quantile(features["volume"][rows], [0, 0.25, 0.5, 0.75, 1]).tolist()))
        if count else None,
    }


def summary_table(summary: dict, unit: str | None) -> str:
    """The talk's table: each number in voxels and in physical units."""
    length = unit or "voxel"
    rows = [
        ("Count", f"{summary['count']:,}", f"{summary['count']:,}"),
        ("Average major axis", f"{summary['average_major_axis_voxels']:.3f} voxels",
         f"{summary['average_major_axis']:.4g} {length}"),
        ("Average volume", f"{summary['average_volume_voxels']:.3f} voxels",
         f"{summary['average_volume']:.4g} {length}^3"),
        ("Volume fraction", f"{100 * summary['volume_fraction']:.2f} %", f"{100 * summary['volume_fraction']:.2f} %"),
    ]
    lines = ["| Feature | Value (voxels) | Value (physical) |", "|---|---:|---:|"]
    return "\n".join(lines + [f"| {a} | {b} | {c} |" for a, b, c in rows])


def report(summaries: list[dict], unit: str | None) -> str:
    """The talk's table for one volume and class; a row per class and step otherwise."""
    if len(summaries) == 1:
        return summary_table(summaries[0], unit)
    return series_table(summaries, unit)


def series_table(summaries: list[dict], unit: str | None) -> str:
    """One row per class and time step: count, average major axis and volume, volume fraction."""
    length = unit or "voxel"
    lines = [f"| class | time | count | average major axis ({length}) | average volume ({length}^3) | "
             "volume fraction |", "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {s['class']} | {s['time']} | {s['count']:,} | {s['average_major_axis']:.4g} | "
              f"{s['average_volume']:.4g} | {100 * s['volume_fraction']:.2f} % |" for s in summaries]
    return "\n".join(lines)


def size_figure(features: tables.Table, path: Path, unit: str | None, title: str) -> None:
    from srjax.report import plt, save_figure

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    length = unit or "voxel"
    for ax, (column, label) in zip(axes, (("volume", f"volume ({length}³)"), ("major_axis", f"major axis ({length})"),
                                          ("equivalent_diameter", f"equivalent diameter ({length})"))):
        values = features[column][features[column] > 0]
        if len(values):
            bins = np.geomspace(values.min(), values.max() * 1.0001, 40) if values.max() > values.min() else 10
            ax.hist(values, bins=bins, color="#3b6ea5")
            ax.set_xscale("log" if values.max() > values.min() else "linear")
        ax.set_xlabel(label)
        ax.set_ylabel("features")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def follow(sources: list[Source], classes: list[int], features: tables.Table, root: Path, min_overlap: int):
    """Register consecutive scans, link each class's features across them, and add a
    ``track`` column to ``features``; returns the displacements, links and events tables."""
    moved = [tracking.displacement(a, b) for a, b in zip(sources, sources[1:])]
    features["track"] = np.zeros(len(features["id"]), np.int64)
    links = {name: [] for name in ("time", "class_id", "id", "next_id", "overlap")}
    events = {name: [] for name in ("time", "class_id", "event", "before", "after")}
    for c in classes:
        instances = [open_source(instances_path(root, c, t), "instances") for t in range(len(sources))]
        overlaps = {t: tracking.overlaps(instances[t], instances[t + 1], moved[t]) for t in range(len(sources) - 1)}
        rows = np.flatnonzero(features["class_id"] == c)
        track, found = tracking.link({k: v[rows] for k, v in features.items()}, overlaps, len(sources), min_overlap)
        features["track"][rows] = track
        for t, pairs in overlaps.items():
            for (a, b), count in sorted(pairs.items()):
                for name, value in zip(links, (t, c, a, b, count)):
                    links[name].append(value)
        for time, event, before, after in found:
            for name, value in zip(events, (time, c, event, " ".join(map(str, before)), " ".join(map(str, after)))):
                events[name].append(value)
    # Object columns: a fixed-width string array pads every row to the longest (one merge of
    # thousands of ids would make the column gigabytes).
    text = {"event", "before", "after"}
    return moved, {k: np.asarray(v, np.int64) for k, v in links.items()}, \
        {k: np.asarray(v, object if k in text else np.int64) for k, v in events.items()}


def write_graphs(features: tables.Table, links, near: float, voxel_size, root: Path) -> None:
    """A scene graph per time step, and (for a series) the spatiotemporal graph of them all."""
    root.mkdir()
    steps = []
    for time in sorted(set(features["time"].tolist())):
        rows = features["time"] == time
        steps.append(graphs.step_graph({k: v[rows] for k, v in features.items()}, near, voxel_size))
        graphs.write(steps[-1], root / f"t{time:04d}")
    if links is not None:
        graphs.write(graphs.spatiotemporal_graph(steps, links), root / "spatiotemporal")


def trajectory_figure(features: tables.Table, path: Path, unit: str | None, most: int = 12) -> None:
    """Volume against time of each class's ``most`` largest tracks."""
    from srjax.report import plt, save_figure

    classes = sorted(set(features["class_id"].tolist()))
    fig, axes = plt.subplots(1, len(classes), figsize=(4.5 * len(classes), 3.6), squeeze=False)
    for ax, c in zip(axes[0], classes):
        rows = features["class_id"] == c
        tracks, volumes = features["track"][rows], features["volume"][rows]
        largest = sorted(set(tracks.tolist()), key=lambda t: -volumes[tracks == t].max())[:most]
        for t in largest:
            on = tracks == t
            ax.plot(features["time"][rows][on], volumes[on], marker="o", ms=3, label=f"track {t}")
        ax.set_title(f"class {c}: {len(set(tracks.tolist()))} tracks")
        ax.set_xlabel("time step")
        ax.set_ylabel(f"volume ({unit or 'voxel'}³)")
    fig.tight_layout()
    save_figure(fig, path)


def quantify(paths: list, classes, out, connectivity: int = 6, min_voxels: int = 1, voxel_size=None,
             unit: str | None = None, overwrite: bool = False, progress: bool = True, min_overlap: int = 1,
             near: float | None = None, workers: int | None = None) -> dict:
    """Quantify each class of ``classes`` in each label volume of ``paths`` (time order) into
    ``out``; several volumes are also registered and their features tracked. Scene graphs
    join features within ``near`` (physical units; None: no graphs)."""
    classes = sorted({int(c) for c in np.atleast_1d(classes)})
    cc.structure(connectivity)
    if min_voxels < 1:
        raise SrjaxError(f"--min-voxels {min_voxels} is below 1; every feature has at least one voxel")
    sources = [open_labels(path) for path in paths]
    check_series(sources)
    for c in classes:
        if c < 0 or c > np.iinfo(sources[0].dtype).max:
            raise SrjaxError(f"--class {c} cannot occur in {sources[0].name} (dtype {sources[0].dtype})")
    size, unit = voxel_size_and_unit(sources[0], voxel_size, unit)
    out = absolute(out)
    with claim_output(out, {f"labels {i}": absolute(p) for i, p in enumerate(paths)}, overwrite), \
            atomic_path(out) as tmp:
        tmp.mkdir()
        # One volume's table is written as it is computed; a series' is held, to be tracked.
        whole = len(paths) > 1 or near is not None
        held = []
        with tables.Writer(tmp / "features") as table_writer:
            with cc.Workers(workers) as pool:  # gone, with their memory, before the tables and figures
                steps = [step for time, path in enumerate(paths)
                         for step in measure(str(absolute(path)), classes, time, connectivity, min_voxels, size, tmp,
                                             unit, progress, pool, held.append if whole else table_writer.write)]
            for c in classes:  # a class may be absent at some steps (a crack not yet started), not at all
                if not any(step.voxels for step in steps if step.cls == c):
                    present = ", ".join(str(v) for v in cc.values_present(str(absolute(paths[0]))))
                    later = f" (nor any of the {len(paths) - 1} later volumes)" if len(paths) > 1 else ""
                    where = sources[0].name + later
                    raise SrjaxError(f"{where} has no voxel of class {c} (its values: {present}); "
                                     "pick --class from those")
            moved = []
            if whole:
                features = tables.concatenate(held)
                held.clear()  # the table holds the features now: one copy, not two
                # Rows close class by class, interleaved: a series' table is ordered as its steps.
                order = np.lexsort((features["id"], features["class_id"], features["time"]))
                features = {name: column[order] for name, column in features.items()}
                if len(sources) > 1:
                    moved, links, events = follow(sources, classes, features, tmp, min_overlap)
                    tables.write(links, tmp / "links.csv")
                    tables.write(events, tmp / "events.csv")
                    trajectory_figure(features, tmp / "trajectories.png", unit)
                table_writer.write(features)
        if not whole:
            features = tables.read(tmp / "features.parquet", SUMMARY_COLUMNS)
        summaries = [summarise(step, features) for step in steps]
        if near is not None:
            write_graphs(features, links if len(sources) > 1 else None, near, size, tmp / "graphs")
        size_figure(features, tmp / "sizes.png", unit, f"feature sizes of {sources[0].name}"
                    + (f" and {len(sources) - 1} later volumes" if len(sources) > 1 else ""))
        record = {
            "srjax": {"written_by": f"srjax {__version__}", "command": "quantify"},
            "labels": [str(absolute(p)) for p in paths], "classes": classes, "connectivity": connectivity,
            "min_voxels": min_voxels, "near": near, "voxel_size": size, "unit": unit, "shape": list(sources[0].shape),
            "steps": summaries,
            "displacements": [m.tolist() for m in moved],
        }
        write_json(tmp / SUMMARY, record)
        (tmp / "summary.md").write_text(report(summaries, unit) + "\n")
    return record
