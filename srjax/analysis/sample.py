"""``srjax sample``: the tiles most worth labelling or inspecting, by a sampler of
``samplers``, judged by ``diversity``; a labels template for the picks.

Outputs in DIR: ``selection.csv`` (the picks: volume, time, z, y, x, size, cluster,
signal, typicality), ``tiles.parquet`` (every tile with its cluster, signal and PCA
coordinates), ``contact_sheet.png``, ``scatter.png`` (PCA of all tiles, picks marked),
``summary.json``; with ``compare`` every method side by side (``compare.md``); with
``alpha_sweep`` DIDS over α (``alpha.csv``, ``alpha.png``); with ``template`` a sparse
OME-Zarr label image per volume, the picks filled with the run's labels for a person
to correct (in napari, say) and every other voxel ``UNLABELLED``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srjax import __version__, io
from srjax.analysis import diversity, samplers, tables
from srjax.analysis.tiles import (Encoder, Grid, Population, check_grid, collect, intensity_range, open_volumes,
                                  pixel_maps, tile_images, tile_stacks)
from srjax.errors import SrjaxError
from srjax.outputs import absolute, atomic_path, claim_output, write_json
from srjax.sparse import UNLABELLED

ALPHAS = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))
POPULATION_SAMPLE = 200  # tiles standing for the population in the diversity ratios


@dataclass(frozen=True)
class Choice:
    alpha: float = 0.85
    metric: str = "euclidean"
    clusters: int | None = None


@dataclass(frozen=True)
class Context:
    volumes: list
    encoder: Encoder | None
    population: Population
    low: float
    high: float
    clusters: np.ndarray
    reference: np.ndarray  # rows standing for the population
    reference_maps: list


def maps_of(ctx: Context, rows) -> list[np.ndarray]:
    if ctx.encoder is not None:
        return ctx.encoder.maps(tile_stacks(ctx.volumes, ctx.population.table, rows, ctx.encoder))
    return pixel_maps(tile_images(ctx.volumes, ctx.population.table, rows, ctx.low, ctx.high))


def pick(ctx: Context, method: str, budget: int, seed: int, choice: Choice) -> np.ndarray:
    options = {"alpha": choice.alpha, "metric": choice.metric, "cluster": ctx.clusters} if method == "dids" else {}
    return samplers.sample(method, ctx.population.embeddings, budget, seed, ctx.population.signal, **options)


def judge(ctx: Context, picks: np.ndarray) -> dict:
    return diversity.score(ctx.population.embeddings, picks, ctx.reference, maps_of(ctx, picks), ctx.reference_maps,
                           ctx.population.signal)


def prepare(paths: list, run, size: int, every: int, budget: int, seed: int, choice: Choice,
            progress: bool) -> Context:
    volumes = open_volumes(paths)
    shape = tuple(volumes[0].shape)
    check_grid(shape, size, every)
    encoder = Encoder.from_run(run) if run is not None else None
    labels = None
    if run is not None and len(volumes) == 1:
        from srjax.rundir import open_run

        labels = io.open_volume(open_run(run)[0].labels, "the run's labels")
        if tuple(labels.shape) != shape:
            raise SrjaxError(f"--run {run} labelled a volume of shape {tuple(labels.shape)}, not {shape}")
    low, high = (encoder.low, encoder.high) if encoder is not None else intensity_range(volumes[0])
    grid = Grid(shape, len(volumes), size, every)
    count = len(grid.corners()) * len(range(0, shape[0], every)) * len(volumes)
    samplers.check_budget(count, budget)
    population = collect(volumes, grid, encoder, labels, low, high, progress)
    clusters = samplers.kmeans(population.embeddings, choice.clusters or min(budget, 10), seed)
    rng = np.random.default_rng(seed)
    reference = np.sort(rng.choice(count, min(count, POPULATION_SAMPLE), replace=False))
    ctx = Context(volumes, encoder, population, low, high, clusters, reference, [])
    return Context(volumes, encoder, population, low, high, clusters, reference, maps_of(ctx, reference))


def contact_sheet(ctx: Context, picks: np.ndarray, path: Path, title: str, most: int = 100) -> None:
    """The picks' middle slices in a grid (the first ``most`` of them)."""
    from srjax.report import plt, save_figure

    picks = picks[:most]
    images = tile_images(ctx.volumes, ctx.population.table, picks, ctx.low, ctx.high)
    columns = min(10, len(picks))
    rows = -(-len(picks) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.75 * rows), squeeze=False)
    t = ctx.population.table
    for ax in axes.ravel():
        ax.axis("off")
    for ax, row, image in zip(axes.ravel(), picks, images):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"t{t['time'][row]} z{t['z'][row]} y{t['y'][row]} x{t['x'][row]}", fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def scatter(ctx: Context, chosen: dict[str, np.ndarray], coords: np.ndarray, path: Path) -> None:
    from srjax.report import plt, save_figure

    fig, axes = plt.subplots(1, len(chosen), figsize=(4.2 * len(chosen), 4), squeeze=False)
    shown = np.random.default_rng(0).permutation(len(coords))[:20000]
    for ax, (method, picks) in zip(axes[0], chosen.items()):
        ax.scatter(coords[shown, 0], coords[shown, 1], s=2, c=ctx.clusters[shown], cmap="tab10", alpha=0.25,
                   linewidths=0)
        ax.scatter(coords[picks, 0], coords[picks, 1], s=28, facecolors="none", edgecolors="black", linewidths=1.2)
        ax.set_title(f"{method}: {len(picks)} picks", fontsize=9)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    fig.tight_layout()
    save_figure(fig, path)


def alpha_figure(rows: list[dict], path: Path) -> None:
    from srjax.report import plt, save_figure

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    alphas = [r["alpha"] for r in rows]
    for term in ("latent", "perceptual", "displacement", "total", "mst_coverage"):
        if term in rows[0]:
            ax.plot(alphas, [r[term] for r in rows], marker="o", ms=3, label=term)
    ax.set_xlabel("α (1: embeddings only)")
    ax.set_ylabel("ratio to the population")
    ax.set_title("DIDS: the effect of α")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def comparison_table(scores: dict[str, dict]) -> str:
    terms = [t for t in ("latent", "perceptual", "displacement", "total", "mst_coverage")
             if any(t in s for s in scores.values())]
    lines = ["| method | " + " | ".join(terms) + " |", "|---|" + "---:|" * len(terms)]
    for method, s in scores.items():
        lines.append(f"| {method} | " + " | ".join(f"{s[t]:.3f}" if t in s else "" for t in terms) + " |")
    return "\n".join(lines)


def selection_table(ctx: Context, chosen: dict[str, np.ndarray]) -> tables.Table:
    t, rows = ctx.population.table, []
    typical = samplers.typicality(ctx.population.embeddings)
    for method, picks in chosen.items():
        for rank, row in enumerate(picks):
            rows.append({"method": method, "rank": rank, **{k: int(t[k][row]) for k in t},
                         "cluster": int(ctx.clusters[row]), "typicality": float(typical[row]),
                         "signal": float(ctx.population.signal[row]) if ctx.population.signal is not None else 0.0})
    return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}


def write_template(ctx: Context, run, picks: np.ndarray, root: Path) -> list[str]:
    """A sparse label image per volume: the picks hold the run's labels, the rest UNLABELLED."""
    from srjax.rundir import open_run

    if run is None:
        raise SrjaxError("--template fills the picks with a run's labels for a person to correct; pass --run")
    run_dir = open_run(run)[0]
    labels = io.open_volume(run_dir.labels, "the run's labels")
    t = ctx.population.table
    written = []
    for time, volume in enumerate(ctx.volumes):
        name = "labels_template.ome.zarr" if len(ctx.volumes) == 1 else f"labels_template_t{time:04d}.ome.zarr"
        shape = tuple(volume.shape)
        mine = [row for row in picks if t["time"][row] == time]
        with io.ome_zarr_writer(root / name, shape, np.uint8, chunks=io.LABEL_CHUNKS, name="labels template",
                                attributes={"unlabelled": UNLABELLED}) as writer:
            for z in range(shape[0]):
                plane = np.full(shape[1:], UNLABELLED, np.uint8)
                for row in (r for r in mine if t["z"][r] == z):
                    ys = slice(int(t["y"][row]), int(t["y"][row] + t["height"][row]))
                    xs = slice(int(t["x"][row]), int(t["x"][row] + t["width"][row]))
                    plane[ys, xs] = io.read(labels[z, ys, xs], "the run's labels")
                writer[z : z + 1] = plane[None]
        written.append(name)
    return written


def sample(paths: list, out, budget: int, method: str = "dids", seed: int = 0, run=None, tile: int = 64,
           every: int = 1, choice: Choice = Choice(), compare: bool = False, alpha_sweep: bool = False,
           template: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    if method not in samplers.METHODS:
        raise SrjaxError(f"--method {method!r} is not one of {', '.join(samplers.METHODS)}")
    out = absolute(out)
    inputs = {f"volume {i}": absolute(p) for i, p in enumerate(paths)}
    with claim_output(out, {**inputs, "run": None if run is None else absolute(run)}, overwrite), \
            atomic_path(out) as tmp:
        ctx = prepare(paths, run, tile, every, budget, seed, choice, progress)
        methods = samplers.METHODS if compare else (method,)
        chosen = {m: pick(ctx, m, budget, seed, choice) for m in methods}
        scores = {m: judge(ctx, picks) for m, picks in chosen.items()}
        tmp.mkdir()
        tables.write(selection_table(ctx, chosen), tmp / "selection.csv")
        from sklearn.decomposition import PCA

        coords = PCA(2, random_state=seed).fit_transform(ctx.population.embeddings)
        everything = {**ctx.population.table, "cluster": ctx.clusters, "pc1": coords[:, 0], "pc2": coords[:, 1],
                      "signal": ctx.population.signal if ctx.population.signal is not None
                      else np.zeros(len(coords))}
        tables.write(everything, tmp / "tiles.parquet")
        contact_sheet(ctx, chosen[method], tmp / "contact_sheet.png", f"{method}: {budget} picks")
        scatter(ctx, chosen, coords, tmp / "scatter.png")
        record = {"srjax": {"written_by": f"srjax {__version__}", "command": "sample"},
                  "volumes": [str(absolute(p)) for p in paths], "run": None if run is None else str(absolute(run)),
                  "embedding": "encoder" if ctx.encoder is not None else "handcrafted",
                  "signal": ctx.population.signal_name, "tiles": len(coords), "budget": budget, "method": method,
                  "seed": seed, "alpha": choice.alpha, "metric": choice.metric, "scores": scores}
        if compare:
            (tmp / "compare.md").write_text(comparison_table(scores) + "\n")
        if alpha_sweep:
            rows = [{"alpha": a, **judge(ctx, pick(ctx, "dids", budget, seed, Choice(a, choice.metric,
                                                                                        choice.clusters)))}
                    for a in ALPHAS]
            tables.write({k: np.asarray([r.get(k, np.nan) for r in rows]) for k in rows[0]}, tmp / "alpha.csv")
            alpha_figure(rows, tmp / "alpha.png")
            record["alpha_sweep"] = rows
        if template:
            record["templates"] = write_template(ctx, run, chosen[method], tmp)
        write_json(tmp / "summary.json", record)
    return record
