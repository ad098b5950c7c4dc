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


def _material(attributes: dict, moved: np.ndarray) -> np.ndarray:
    """A node's centroid in the frame of the first step (its step's displacement taken off)."""
    return np.array([attributes["centroid_z"], attributes["centroid_y"], attributes["centroid_x"]]) \
        - moved[int(attributes["time"])]


def _half_ball_voxels(centre, direction, radius: float, shape, moved_now) -> tuple[int, int]:
    """Voxels of the image inside the ball ahead of and behind ``centre`` (material frame;
    those on the plane through it count on neither side)."""
    r = int(np.ceil(radius))
    offsets = np.stack(np.meshgrid(*[np.arange(-r, r + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    offsets = offsets[(offsets**2).sum(1) <= radius**2]
    points = np.round(centre + moved_now).astype(int) + offsets
    inside = np.all((points >= 0) & (points < np.asarray(shape)), axis=1)
    side = offsets[inside] @ direction
    return int((side > 0).sum()), int((side < 0).sum())


def growth_toward(graph: nx.Graph, grower: int, target: int, radius: float, shape, displacements,
                  least_shift: float = 1.0) -> dict:
    """Do features of class ``grower`` grow toward more features of class ``target``?

    For each ``next`` edge of a ``grower`` feature, the growth direction is the shift of
    its centroid in the sample's own frame (the scans' ``displacements`` taken off); the
    ``target`` features of the earlier step within ``radius`` voxels of its centroid are
    counted ahead of it and behind it, each side as a density over the sample's voxels in
    that half of the ball (a crack starting at the surface has less sample behind it).
    A density ratio ahead / behind above 1 says yes; ``expected_ahead`` is how many of the
    same targets would lie ahead if they were spread evenly over the sample. Features whose
    centroid moved less than ``least_shift`` voxels (a pore growing in place) are skipped."""
    moved = np.concatenate([np.zeros((1, 3)), np.cumsum(np.asarray(displacements, float).reshape(-1, 3), 0)])
    rows = []
    for u, v, edge in graph.edges(data=True):
        a, b = graph.nodes[u], graph.nodes[v]
        if edge.get("kind") != "next" or a["class_id"] != grower:
            continue
        if a["time"] > b["time"]:
            a, b = b, a
        start, end = _material(a, moved), _material(b, moved)
        direction = end - start
        if np.linalg.norm(direction) < least_shift:
            continue
        direction /= np.linalg.norm(direction)
        targets = [_material(n, moved) for _, n in graph.nodes(data=True)
                   if n["class_id"] == target and n["time"] == a["time"]]
        offsets = np.asarray(targets).reshape(-1, 3) - start
        side = offsets[(offsets**2).sum(1) <= radius**2] @ direction
        ahead, behind = int((side > 0).sum()), int((side < 0).sum())
        room_ahead, room_behind = _half_ball_voxels(start, direction, radius, shape, moved[int(a["time"])])
        rows.append({"time": int(a["time"]), "ahead": ahead, "behind": behind,
                     "room_ahead": room_ahead, "room_behind": room_behind,
                     "expected_ahead": (ahead + behind) * room_ahead / max(room_ahead + room_behind, 1)})
    ahead, behind = sum(r["ahead"] for r in rows), sum(r["behind"] for r in rows)
    room_ahead, room_behind = sum(r["room_ahead"] for r in rows), sum(r["room_behind"] for r in rows)
    ratio = (ahead / room_ahead) / (behind / room_behind) if behind and room_ahead and room_behind else float("nan")
    return {"steps": rows, "ahead": ahead, "behind": behind, "expected_ahead": sum(r["expected_ahead"] for r in rows),
            "density_ratio": ratio}
