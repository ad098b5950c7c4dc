"""Synthetic SR-CT volumes with ground truth, modelled on the paper's magnesium crystal.

Classes (ids ascend with clean grey level):
  0 air background, 1 sample body, 2 intergrowth sheets, 3 bright boundary shell.

What makes it hard the way the real sample is hard:
  * intergrowth sheets are thin (2-3 voxels), faint (+``contrast`` over the body) and
    tilted, so they continue across neighbouring slices;
  * a smooth composition drift brightens part of the body by about the intergrowth
    contrast, so clustering on intensity labels that whole region as intergrowth;
  * noise, ring artifacts and partial-volume blur; optionally streaks made the
    physical way, by projecting each slice and reconstructing it with filtered
    back-projection from a noisy sinogram with miscalibrated detector pixels.

Every slice is computed on its own from the seed, so any slab can be generated
without the rest of the volume.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

AIR, BODY, INTERGROWTH, BOUNDARY = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class PhantomSpec:
    shape: tuple[int, int, int] = (48, 160, 160)
    seed: int = 0
    noise: float = 0.04
    contrast: float = 0.12
    drift: float = 0.12
    rings: float = 0.04
    sheets: int = 6
    fbp: bool = False
    fbp_angles: int = 180


@dataclasses.dataclass(frozen=True)
class _Sheet:
    centre: np.ndarray  # (z, y, x) in voxels
    normal: np.ndarray
    along: np.ndarray  # an in-sheet direction for the waviness
    half_thickness: float
    radius: float
    wave_amplitude: float
    wave_length: float


@dataclasses.dataclass(frozen=True)
class _Geometry:
    angle: float
    twist: float
    semi_axes: tuple[float, float]
    drift_direction: np.ndarray
    drift_offset: float
    drift_width: float
    ring_radii: np.ndarray
    ring_amplitudes: np.ndarray
    sheets: tuple[_Sheet, ...]


_LEVELS = {AIR: 0.05, BODY: 0.40, BOUNDARY: 0.85}


def _geometry(spec: PhantomSpec) -> _Geometry:
    rng = np.random.default_rng(spec.seed)
    n, h, w = spec.shape
    size = min(h, w)
    semi_axes = (0.44 * size * rng.uniform(0.92, 1.0), 0.34 * size * rng.uniform(0.92, 1.0))
    angle = rng.uniform(0, np.pi)
    sheets = []
    for _ in range(spec.sheets):
        normal = np.array([rng.uniform(-0.45, 0.45), *rng.normal(size=2)])
        normal /= np.linalg.norm(normal)
        along = np.cross(normal, rng.normal(size=3))
        along /= np.linalg.norm(along)
        centre = np.array(
            [
                rng.uniform(0, n),
                h / 2 + rng.uniform(-0.6, 0.6) * semi_axes[1],
                w / 2 + rng.uniform(-0.6, 0.6) * semi_axes[0],
            ]
        )
        sheets.append(
            _Sheet(
                centre=centre,
                normal=normal,
                along=along,
                half_thickness=rng.uniform(1.4, 2.0),
                radius=rng.uniform(0.15, 0.35) * size,
                wave_amplitude=rng.uniform(0.5, 2.5),
                wave_length=rng.uniform(0.2, 0.5) * size,
            )
        )
    direction = rng.normal(size=2)
    ring_count = max(3, size // 24)
    return _Geometry(
        angle=angle,
        twist=rng.uniform(-0.3, 0.3),
        semi_axes=semi_axes,
        drift_direction=direction / np.linalg.norm(direction),
        drift_offset=rng.uniform(0.2, 0.26) * size,
        drift_width=0.06 * size,
        ring_radii=rng.uniform(0.05, 0.48, size=ring_count) * size,
        ring_amplitudes=rng.choice([-1.0, 1.0], size=ring_count) * rng.uniform(0.5, 1.0, size=ring_count),
        sheets=tuple(sheets),
    )


def _clean_slice(spec: PhantomSpec, geo: _Geometry, z: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free grey levels and the class map of slice ``z``."""
    n, h, w = spec.shape
    yy, xx = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    zfrac = z / max(n - 1, 1) - 0.5
    theta = geo.angle + geo.twist * zfrac
    u = np.cos(theta) * xx + np.sin(theta) * yy
    v = -np.sin(theta) * xx + np.cos(theta) * yy
    taper = 1.0 - 0.12 * zfrac
    a, b = geo.semi_axes[0] * taper, geo.semi_axes[1] * taper
    inside = (np.abs(u) / a) ** 4 + (np.abs(v) / b) ** 4 <= 1.0
    depth = ndimage.distance_transform_edt(inside)
    shell = inside & (depth <= max(2.0, 0.02 * min(h, w)))
    interior = inside & ~shell

    points = np.stack([np.full_like(yy, z, dtype=float), yy + (h - 1) / 2, xx + (w - 1) / 2], axis=-1)
    sheet = np.zeros((h, w), bool)
    for s in geo.sheets:
        offset = points - s.centre
        normal_dist = offset @ s.normal
        wave = s.wave_amplitude * np.sin(2 * np.pi * (offset @ s.along) / s.wave_length)
        in_plane = np.linalg.norm(offset - normal_dist[..., None] * s.normal, axis=-1)
        sheet |= (np.abs(normal_dist + wave) <= s.half_thickness) & (in_plane <= s.radius)
    sheet &= interior

    labels = np.full((h, w), AIR, np.uint8)
    labels[interior] = BODY
    labels[sheet] = INTERGROWTH
    labels[shell] = BOUNDARY

    image = np.full((h, w), _LEVELS[AIR])
    image[interior] = _LEVELS[BODY]
    image[sheet] = _LEVELS[BODY] + spec.contrast
    image[shell] = _LEVELS[BOUNDARY]
    projection = xx * geo.drift_direction[0] + yy * geo.drift_direction[1]
    drift = spec.drift / (1.0 + np.exp(-(projection - geo.drift_offset) / geo.drift_width))
    image = np.where(inside, image + drift, image)
    return ndimage.gaussian_filter(image, 0.7), labels


def _rings(spec: PhantomSpec, geo: _Geometry) -> np.ndarray:
    _, h, w = spec.shape
    yy, xx = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    radius = np.hypot(yy, xx)[..., None]
    profile = np.exp(-((radius - geo.ring_radii) ** 2) / (2 * 0.6**2))
    return spec.rings * (profile * geo.ring_amplitudes).sum(-1)


def _fbp(spec: PhantomSpec, image: np.ndarray, rng: np.random.Generator, detector_offsets) -> np.ndarray:
    from skimage.transform import iradon, radon

    size = min(image.shape)
    square = image[:size, :size] - _LEVELS[AIR]
    angles = np.linspace(0.0, 180.0, spec.fbp_angles, endpoint=False)
    sinogram = radon(square, theta=angles, circle=True)
    # Noise and detector miscalibration live in the projections; FBP turns them into
    # the streaks and rings seen in real reconstructions.
    scale = spec.noise * np.sqrt(size)
    sinogram += rng.normal(0.0, scale, sinogram.shape) + detector_offsets[:, None] * scale
    out = np.full(image.shape, _LEVELS[AIR])
    out[:size, :size] += iradon(sinogram, theta=angles, filter_name="ramp", circle=True)
    return out


def phantom_slice(spec: PhantomSpec, z: int, geometry: _Geometry | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, labels uint8) of slice ``z``."""
    geo = geometry or _geometry(spec)
    image, labels = _clean_slice(spec, geo, z)
    rng = np.random.default_rng([spec.seed, z])
    if spec.fbp:
        detector_rng = np.random.default_rng([spec.seed, 2**31])
        offsets = detector_rng.normal(0.0, spec.rings * 4, min(image.shape))
        image = _fbp(spec, image, rng, offsets)
    else:
        image = image + _rings(spec, geo) + rng.normal(0.0, spec.noise, image.shape)
    return image.astype(np.float32), labels


def make_phantom(spec: PhantomSpec = PhantomSpec(), progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Whole phantom in memory: (volume float32 [N,H,W], labels uint8 [N,H,W])."""
    from srjax.progress import bar as progress_bar

    geo = _geometry(spec)
    volume = np.empty(spec.shape, np.float32)
    labels = np.empty(spec.shape, np.uint8)
    for z in progress_bar(range(spec.shape[0]), desc="phantom", unit="slice", disable=not progress):
        volume[z], labels[z] = phantom_slice(spec, z, geo)
    return volume, labels
