"""Scene graphs: features as nodes, nearness and persistence as edges (networkx).

At each time step a node per feature (every column of its feature-table row as an
attribute) and an edge ``near`` between two features whose bounding boxes come within
``distance`` of each other (physical units; ``gap`` on the edge, 0 when they overlap).
Over time the steps' graphs are stacked into one spatiotemporal graph whose ``next``
edges join a feature to the features it overlaps at the next step (``overlap`` in
voxels). Each is written as GraphML and as node-link JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import numpy as np
from scipy.spatial import cKDTree

from srjax.analysis import tables
from srjax.outputs import atomic_path, plain_json


def node(time: int, cls: int, feature: int) -> str:
    return f"t{time}/c{cls}/{feature}"


def _boxes(features: tables.Table, scale) -> tuple[np.ndarray, np.ndarray]:
    low = np.stack([features["z0"], features["y0"], features["x0"]], axis=1) * scale
    high = np.stack([features["z1"], features["y1"], features["x1"]], axis=1) * scale
    return low, high


def gaps(low: np.ndarray, high: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between boxes a and b (0 when they overlap)."""
    per_axis = np.maximum(0.0, np.maximum(low[a], low[b]) - np.minimum(high[a], high[b]))
    return np.sqrt((per_axis**2).sum(axis=1))


def near_pairs(features: tables.Table, distance: float, voxel_size=None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), i < j, of rows whose boxes come within ``distance``, and their gaps.

    Candidates come from a k-d tree over box centres, searched out to ``distance`` plus
    twice the half-diagonal of all but the largest boxes; the few boxes larger than that
    are compared with every box directly."""
    scale = np.asarray(voxel_size if voxel_size is not None else (1.0, 1.0, 1.0), np.float64)
    low, high = _boxes(features, scale)
    n = len(low)
    if n < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0)
    half = np.linalg.norm(high - low, axis=1) / 2
    limit = np.quantile(half, 0.99)
    large = np.flatnonzero(half > limit)
    small = np.flatnonzero(half <= limit)
    centres = (low + high) / 2
    pairs = [small[np.asarray(sorted(cKDTree(centres[small]).query_pairs(distance + 2 * limit)), np.int64)
                   .reshape(-1, 2)]]
    for i in large:
        others = np.arange(n)
        pairs.append(np.stack([np.full(n, i), others], axis=1)[others != i])
    pairs = np.concatenate(pairs)
    pairs = np.unique(np.sort(pairs, axis=1), axis=0)
    gap = gaps(low, high, pairs[:, 0], pairs[:, 1])
    keep = gap <= distance
    return pairs[keep], gap[keep]


def step_graph(features: tables.Table, distance: float, voxel_size=None) -> nx.Graph:
    """The scene graph of one time step's features."""
    graph = nx.Graph()
    for row in tables.rows(features):
        graph.add_node(node(row["time"], row["class_id"], row["id"]), **row)
    pairs, gap = near_pairs(features, distance, voxel_size)
    keys = [node(t, c, i) for t, c, i in zip(features["time"], features["class_id"], features["id"])]
    graph.add_edges_from((keys[a], keys[b], {"kind": "near", "gap": float(g)}) for (a, b), g in zip(pairs, gap))
    return graph


def spatiotemporal_graph(steps: list[nx.Graph], links: tables.Table) -> nx.Graph:
    """The steps' graphs joined by ``next`` edges from each feature to those it overlaps a step later."""
    graph = nx.union_all(steps) if steps else nx.Graph()
    for t, c, a, b, overlap in zip(links["time"], links["class_id"], links["id"], links["next_id"], links["overlap"]):
        u, v = node(int(t), int(c), int(a)), node(int(t) + 1, int(c), int(b))
        if u in graph and v in graph:
            graph.add_edge(u, v, kind="next", overlap=int(overlap), gap=0.0)
    return graph


def write(graph: nx.Graph, stem: Path) -> None:
    """``stem``.graphml and ``stem``.json (networkx node-link form)."""
    with atomic_path(stem.with_suffix(".graphml")) as tmp:
        nx.write_graphml(graph, tmp)
    with atomic_path(stem.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(plain_json(nx.node_link_data(graph, edges="edges")), indent=1) + "\n")
