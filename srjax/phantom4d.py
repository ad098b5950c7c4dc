"""A 4-D phantom: an in-situ corrosion series whose every count, size, track and
displacement has a known right answer.

A block of aluminium alloy (class 0) holding static bright intermetallic inclusions
(1) is scanned at ``steps`` times while it is loaded: pores (2) nucleate at known
steps and grow, two of them into each other (a merge), and a thin crack (3) runs in
from the surface at x = 0 and lengthens every step. Between scans the sample moves
as a whole by a known integer displacement (``shifts``: where the material's origin
lies in each scan). Objects are placed so that none of them touches another of its
class except the merging pair, and pores and inclusions keep clear of the crack, so
every event is one the object model says: ``truth_events`` reads them off the
``objects`` volumes (an id per object), independently of any tracker.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

MATRIX, INCLUSION, PORE, CRACK = 0, 1, 2, 3
CLASS_NAMES = ("matrix", "inclusion", "pore", "crack")
LEVELS = np.array([0.45, 0.85, 0.08, 0.08])


@dataclasses.dataclass(frozen=True)
class SeriesSpec:
    shape: tuple[int, int, int] = (32, 96, 96)
    steps: int = 6
    seed: int = 0
    noise: float = 0.04
    inclusions: int = 60
    pores: int = 6  # besides the merging pair
    max_shift: int = 1  # voxels the sample may move along y and x between scans (z: always +1, the pull)


@dataclasses.dataclass(frozen=True)
class Ball:
    id: int
    cls: int
    centre: tuple[float, float, float]  # material frame
    birth: int  # first step it exists
    radius: float  # at its birth
    growth: float  # radius gained per step

    def radius_at(self, step: int) -> float:
        return self.radius + self.growth * (step - self.birth) if step >= self.birth else 0.0


@dataclasses.dataclass(frozen=True)
class Series:
    spec: SeriesSpec
    volumes: np.ndarray  # [T, N, H, W] float32
    labels: np.ndarray  # [T, N, H, W] uint8, the classes above
    objects: np.ndarray  # [T, N, H, W] uint16, the id of the object at each voxel (0: matrix)
    shifts: np.ndarray  # [T, 3] int: the material's origin in each scan
    balls: tuple[Ball, ...]
    crack_id: int
    crack_plane: float
    crack_lengths: tuple[float, ...]


def _shifts(spec: SeriesSpec, rng) -> np.ndarray:
    steps = np.zeros((spec.steps, 3), np.int64)
    steps[1:, 0] = 1
    steps[1:, 1:] = rng.integers(-spec.max_shift, spec.max_shift + 1, size=(spec.steps - 1, 2))
    return np.cumsum(steps, axis=0)


def _clear(centre, radius: float, placed: list, band: tuple[float, float], margin: float, depth=None) -> bool:
    """Whether a ball keeps ``margin`` from every placed ball, and (reaching ``depth`` along
    z, default ``radius``) out of the crack's band."""
    depth = radius if depth is None else depth
    if band[0] - depth - margin <= centre[0] <= band[1] + depth + margin:
        return False
    return all(np.linalg.norm(centre - c) > radius + r + margin for c, r in placed)


def _centre(rng, spec: SeriesSpec, extent) -> np.ndarray:
    """A centre for something reaching ``extent`` (z, y, x) from it that stays in the field of
    view wherever the sample moves (z by up to steps - 1, y and x by up to max_shift a step)."""
    travel = (spec.steps - 1) * np.array([1, spec.max_shift, spec.max_shift])
    low = np.asarray(extent, float) + 1 + np.array([0, 1, 1]) * travel
    high = np.asarray(spec.shape) - np.asarray(extent, float) - 2 - travel
    if np.any(high <= low):
        raise ValueError(f"a {spec.shape} phantom has no room for a ball reaching {extent}; use a larger shape")
    return rng.uniform(low, high)


def _model(spec: SeriesSpec):
    """The balls (pores and inclusions), the crack's id, plane and length at each step."""
    rng = np.random.default_rng([spec.seed, 4])
    n, h, w = spec.shape
    crack_plane = n / 2
    band = (crack_plane - 2, crack_plane + 2)
    last = spec.steps - 1
    placed, balls = [], []

    def add(cls, centre, birth, radius, growth):
        balls.append(Ball(len(balls) + 1, cls, tuple(float(v) for v in centre), birth, radius, growth))
        placed.append((np.asarray(centre), balls[-1].radius_at(last)))

    # The merging pair, side by side in a slice: born at steps 0 and 1 with the same radius
    # by step 1, they touch around the middle step.
    gap, start = 7.0, 1.5
    growth = (gap / 2 - start) / max(1, last // 2 + 0.5)
    final = start + growth * last
    for _ in range(10_000):
        middle = _centre(rng, spec, (final, gap / 2 + final, gap / 2 + final))
        angle = rng.uniform(0, 2 * np.pi)
        offset = np.array([0.0, np.sin(angle), np.cos(angle)]) * gap / 2
        if _clear(middle, gap / 2 + final, placed, band, 0.0, depth=final):
            add(PORE, middle - offset, 0, start, growth)
            add(PORE, middle + offset, 1, start, growth)
            break
    else:
        raise ValueError(f"no room for the merging pores in {spec.shape}; use a larger shape")
    for kind, count in ((PORE, spec.pores), (INCLUSION, spec.inclusions)):
        for _ in range(count):
            birth = int(rng.integers(1, max(2, last))) if kind == PORE else 0
            radius = float(rng.uniform(1.5, 2.5) if kind == PORE else rng.uniform(1.0, 2.2))
            growth = float(rng.uniform(0.3, 0.6)) if kind == PORE else 0.0
            reach = radius + growth * (last - birth)
            for _ in range(10_000):
                centre = _centre(rng, spec, (reach, reach, reach))
                if _clear(centre, reach, placed, band, 3.0 if kind == PORE else 2.0):
                    add(kind, centre, birth, radius, growth)
                    break
            else:
                raise ValueError(f"no room for {count} balls of class {kind} in {spec.shape}; use a larger shape")
    lengths = tuple(float(v) for v in np.linspace(0.2 * w, 0.75 * w, spec.steps))
    return tuple(balls), len(balls) + 1, crack_plane, lengths


def _render(spec: SeriesSpec, balls, crack_id: int, crack_plane: float, length: float, step: int, shift):
    """Labels and object ids of one scan, the material shifted by ``shift``."""
    n, h, w = spec.shape
    labels = np.zeros(spec.shape, np.uint8)
    objects = np.zeros(spec.shape, np.uint16)
    for ball in balls:
        r = ball.radius_at(step)
        if r <= 0:
            continue
        c = np.asarray(ball.centre) + shift
        low = np.maximum(np.floor(c - r).astype(int), 0)
        high = np.minimum(np.ceil(c + r).astype(int) + 1, spec.shape)
        if np.any(high <= low):
            continue
        z, y, x = np.ogrid[low[0]:high[0], low[1]:high[1], low[2]:high[2]]
        hit = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r**2
        box = tuple(slice(a, b) for a, b in zip(low, high))
        labels[box][hit] = ball.cls
        objects[box][hit] = ball.id
    z, y, x = np.ogrid[0:n, 0:h, 0:w]
    along = x - shift[2]
    surface = crack_plane + shift[0] + 0.8 * np.sin((y - shift[1]) / 7.0)  # a slightly wavy crack face
    crack = (np.abs(z + 0.5 - surface) < 1.0) & (along < length) & (along >= -1)
    labels[crack] = CRACK
    objects[crack] = crack_id
    return labels, objects


def make_series(spec: SeriesSpec = SeriesSpec()) -> Series:
    balls, crack_id, crack_plane, lengths = _model(spec)
    shifts = _shifts(spec, np.random.default_rng([spec.seed, 5]))
    volumes = np.empty((spec.steps, *spec.shape), np.float32)
    labels = np.empty((spec.steps, *spec.shape), np.uint8)
    objects = np.empty((spec.steps, *spec.shape), np.uint16)
    for step in range(spec.steps):
        labels[step], objects[step] = _render(spec, balls, crack_id, crack_plane, lengths[step], step, shifts[step])
        rng = np.random.default_rng([spec.seed, 6, step])
        volumes[step] = ndimage.gaussian_filter(LEVELS[labels[step]], 0.7) + rng.normal(0, spec.noise, spec.shape)
    return Series(spec, volumes, labels, objects, shifts, balls, crack_id, crack_plane, lengths)


def truth_events(series: Series, cls: int, connectivity: int = 6) -> dict:
    """Births, deaths, merges and splits of class ``cls``'s connected components, read off
    the object ids: a component at step t is the set of objects it holds; it continues
    a component of t - 1 holding one of its objects."""
    from srjax.analysis.components import structure

    events = {"birth": [], "death": [], "merge": [], "split": []}
    previous = []
    for step in range(series.spec.steps):
        ids, count = ndimage.label(series.labels[step] == cls, structure(connectivity))
        current = []
        for component in range(1, count + 1):
            current.append(frozenset(np.unique(series.objects[step][ids == component]).tolist()))
        for members in current:
            parents = [p for p in previous if p & members]
            if not parents and step > 0:
                events["birth"].append((step, tuple(sorted(members))))
            if len(parents) > 1:
                events["merge"].append((step, tuple(sorted(members))))
        for members in previous:
            children = [c for c in current if c & members]
            if not children:
                events["death"].append((step, tuple(sorted(members))))
            if len(children) > 1:
                events["split"].append((step, tuple(sorted(members))))
        previous = current
    return events
