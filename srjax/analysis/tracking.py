"""Features followed through a time series: registration, overlap links, events, tracks.

Between consecutive scans the sample moves as a whole (it is pulled, it settles): the
displacement is found by phase correlation (``skimage.registration``) of a central
block of the two label volumes. Features of the two steps are then linked where they
overlap once the later one is shifted back, counted slab by slab from the instance
images, so no volume is held. A feature with no link back is a birth, one with no link
forward a death; two or more links back make a merge, two or more forward a split. A
track continues through one-to-one links only; every event starts new tracks.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from skimage.registration import phase_cross_correlation

from srjax.analysis import tables
from srjax.sources import Source

# The block registration reads: enough structure to lock on to, small enough to read quickly.
REGISTRATION_BLOCK = (32, 256, 256)
EVENTS = ("birth", "death", "merge", "split")


def _central(shape, block) -> tuple[slice, ...]:
    return tuple(slice((n - min(n, b)) // 2, (n - min(n, b)) // 2 + min(n, b)) for n, b in zip(shape, block))


def displacement(earlier: Source, later: Source, block=REGISTRATION_BLOCK) -> np.ndarray:
    """The integer (z, y, x) by which the sample moved from ``earlier`` to ``later``."""
    window = _central(earlier.shape, block)
    a, b = (np.asarray(s.read(window[0].start, window[0].stop))[:, window[1], window[2]].astype(np.float32)
            for s in (earlier, later))
    if a.min() == a.max() or b.min() == b.max():  # nothing to register by: assume the sample stayed
        return np.zeros(3, np.int64)
    shift, _, _ = phase_cross_correlation(a, b)
    return -np.round(shift).astype(np.int64)


def _windows(n: int, offset: int) -> tuple[slice, slice]:
    """Where axis positions p (earlier) and p + offset (later) both lie inside 0..n-1."""
    start, stop = max(0, -offset), min(n, n - offset)
    return slice(start, max(start, stop)), slice(start + offset, max(start, stop) + offset)


def overlaps(earlier: Source, later: Source, moved, slab: int = 16) -> dict[tuple[int, int], int]:
    """Voxels shared by each (earlier id, later id) once the later scan is shifted back by ``moved``."""
    za, zb = _windows(earlier.shape[0], int(moved[0]))
    ya, yb = _windows(earlier.shape[1], int(moved[1]))
    xa, xb = _windows(earlier.shape[2], int(moved[2]))
    keys, counts = [], []
    for z in range(za.start, za.stop, slab):
        stop = min(z + slab, za.stop)
        a = np.asarray(earlier.read(z, stop))[:, ya, xa].astype(np.uint64)
        b = np.asarray(later.read(z - za.start + zb.start, stop - za.start + zb.start))[:, yb, xb].astype(np.uint64)
        both = (a > 0) & (b > 0)
        pair, count = np.unique((a[both] << np.uint64(32)) | b[both], return_counts=True)
        keys.append(pair)
        counts.append(count)
    if not keys:
        return {}
    pair, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    total = np.bincount(inverse, np.concatenate(counts))
    return {(int(k >> np.uint64(32)), int(k & np.uint64(0xFFFFFFFF))): int(c) for k, c in zip(pair, total)}


def link(features: tables.Table, links: dict[int, dict], steps: int, min_overlap: int = 1):
    """Tracks and events of one class's features from its overlaps between ``steps`` time steps.

    ``links[t]`` holds the overlaps between steps t and t + 1. Returns the track of each
    row of ``features`` and the event rows (time, event, before, after): ``time`` is the
    later step; ``before`` and ``after`` are the ids involved at time - 1 and time.
    """
    times = features["time"]
    ids = features["id"]
    row_of = {(int(t), int(i)): row for row, (t, i) in enumerate(zip(times, ids))}
    track = np.zeros(len(ids), np.int64)
    events = []
    steps = list(range(steps))
    next_track = 1
    for row in np.flatnonzero(times == 0):
        track[row], next_track = next_track, next_track + 1
    for earlier, later in zip(steps, steps[1:]):
        forward, backward = defaultdict(list), defaultdict(list)
        for (a, b), count in links.get(earlier, {}).items():
            if count >= min_overlap and (earlier, a) in row_of and (later, b) in row_of:
                forward[a].append(b)
                backward[b].append(a)
        now = [int(i) for i in ids[times == later]]
        before = [int(i) for i in ids[times == earlier]]
        for b in now:
            parents = sorted(backward[b])
            row = row_of[(later, b)]
            if len(parents) == 1 and len(forward[parents[0]]) == 1:
                track[row] = track[row_of[(earlier, parents[0])]]
                continue
            track[row], next_track = next_track, next_track + 1
            if not parents:
                events.append((later, "birth", (), (b,)))
            elif len(parents) > 1:
                children = sorted(set().union(*(forward[a] for a in parents)))
                events.append((later, "merge", tuple(parents), tuple(children)))
        for a in before:
            children = sorted(forward[a])
            if not children:
                events.append((later, "death", (a,), ()))
            elif len(children) > 1:
                events.append((later, "split", (a,), tuple(children)))
    return track, sorted(set(events), key=lambda e: (e[0], EVENTS.index(e[1]), e[2], e[3]))
