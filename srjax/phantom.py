"""Synthetic SR-CT volumes with ground truth, in families that fail clustering in different ways.

``magnesium`` (the demo), modelled on the paper's magnesium crystal. Classes (ids ascend
with clean grey level): 0 air background, 1 sample body, 2 intergrowth sheets, 3 bright
boundary shell. What makes it hard the way the real sample is hard:
  * intergrowth sheets are thin (2-3 voxels), faint (+``contrast`` over the body) and
    tilted, so they continue across neighbouring slices;
  * a smooth composition drift brightens part of the body by about the intergrowth
    contrast, so clustering on intensity labels that whole region as intergrowth;
  * noise, ring artifacts and partial-volume blur; optionally streaks made the
    physical way, by projecting each slice and reconstructing it with filtered
    back-projection from a noisy sinogram with miscalibrated detector pixels.

``composite``: a cylinder of ceramic holding metal particles and pores of every size
(radii from about one voxel to a tenth of the slice), three well separated phases
(0 void: air and pores, 1 ceramic, 2 metal) under correlated, intensity-dependent
noise, as in nano-CT of a cermet. Clustering is nearly right; self-correction must
do no harm. With ``cupping`` it is the ``cupping`` family: beam hardening darkens the
centre of the dense sample, so the metal there has the grey level of ceramic at the edge.

``rock``: a porous rock of packed grains of two minerals, thin dark cracks between
grains, pores, and a bright accessory mineral in small inclusions at about 2 % of the
voxels (0 void, 1 and 2 the minerals, 3 the rare bright one).

Every slice is computed on its own from the seed, so any slab can be generated
without the rest of the volume.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from srjax.errors import SrjaxError

AIR, BODY, INTERGROWTH, BOUNDARY = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class PhantomSpec:
    shape: tuple[int, int, int] = (48, 160, 160)
    seed: int = 0
    family: str = "magnesium"  # or "composite", "rock" (``FAMILIES`` names them with their settings)
    noise: float = 0.04
    contrast: float = 0.12
    drift: float = 0.12
    rings: float = 0.04
    sheets: int = 6
    fbp: bool = False
    fbp_angles: int = 180
    cupping: float = 0.0  # composite and rock: the fraction the centre is darkened by


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


# Clean grey levels of the material families' classes, ascending with the class id.
_MATERIAL_LEVELS = {"composite": (0.05, 0.45, 0.85), "rock": (0.05, 0.38, 0.58, 1.6)}


@dataclasses.dataclass(frozen=True)
class _Material:
    """A cylindrical sample of a material family: balls (z, y, x, radius, class), for the
    rock also grain centres and each grain's mineral, and ring artifacts."""

    radius: float  # of the sample cylinder, in voxels
    balls: np.ndarray  # [M, 5]
    grain_centres: np.ndarray  # [G, 3]
    grain_classes: np.ndarray  # [G]
    ring_radii: np.ndarray
    ring_amplitudes: np.ndarray


def _balls(rng, count_volume: float, low: float, high: float, label: int, shape, radius: float) -> list:
    """Balls of log-uniform radii in [low, high] inside the cylinder, until their volumes sum to ``count_volume``."""
    n, h, w = shape
    balls, total = [], 0.0
    while total < count_volume:
        r = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        distance, angle = radius * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
        balls.append((rng.uniform(0, n), (h - 1) / 2 + distance * np.sin(angle), (w - 1) / 2 + distance * np.cos(angle),
                      r, label))
        total += 4 / 3 * np.pi * r**3
    return balls


def _material(spec: PhantomSpec) -> _Material:
    rng = np.random.default_rng([spec.seed, 7])
    n, h, w = spec.shape
    size = min(h, w)
    radius = 0.45 * size
    sample = n * np.pi * radius**2
    largest = max(2.0, 0.1 * size)
    grain_centres, grain_classes = np.zeros((0, 3)), np.zeros(0, np.int64)
    if spec.family == "composite":
        balls = (_balls(rng, 0.22 * sample, 1.0, largest, 2, spec.shape, radius)  # metal particles
                 + _balls(rng, 0.08 * sample, 1.0, largest / 2, 0, spec.shape, radius))  # pores
    else:
        grain = max(2.0, 0.06 * size)  # mean grain radius
        count = max(4, int(sample / (4 / 3 * np.pi * grain**3)))
        distance, angle = radius * np.sqrt(rng.uniform(size=count)), rng.uniform(0, 2 * np.pi, count)
        grain_centres = np.stack([rng.uniform(0, n, count), (h - 1) / 2 + distance * np.sin(angle),
                                  (w - 1) / 2 + distance * np.cos(angle)], axis=1)
        grain_classes = np.where(rng.uniform(size=count) < 0.35, 2, 1)
        balls = (_balls(rng, 0.05 * sample, 1.0, grain, 0, spec.shape, radius)  # pores
                 + _balls(rng, 0.03 * sample, 0.8, 3.0, 3, spec.shape, radius))  # the rare bright mineral
    ring_count = max(3, size // 24)
    return _Material(radius=radius, balls=np.asarray(balls, float), grain_centres=grain_centres,
                     grain_classes=grain_classes, ring_radii=rng.uniform(0.05, 0.48, size=ring_count) * size,
                     ring_amplitudes=rng.choice([-1.0, 1.0], size=ring_count) * rng.uniform(0.5, 1.0, size=ring_count))


def _material_slice(spec: PhantomSpec, geo: _Material, z: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free grey levels and the class map of slice ``z`` of a composite or rock."""
    from scipy.spatial import cKDTree

    _, h, w = spec.shape
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    centre_distance = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
    inside = centre_distance <= geo.radius
    labels = np.ones((h, w), np.uint8)
    if len(geo.grain_centres):
        points = np.stack([np.full(yy.size, float(z)), yy.ravel(), xx.ravel()], axis=1)
        distances, nearest = cKDTree(geo.grain_centres).query(points, k=2)
        labels = geo.grain_classes[nearest[:, 0]].reshape(h, w).astype(np.uint8)
        crack = (distances[:, 1] - distances[:, 0]).reshape(h, w) < 1.2  # thin dark cracks between grains
        labels[crack] = 0
    for bz, by, bx, r, label in geo.balls:
        if abs(z - bz) >= r:
            continue
        disc = np.sqrt(r**2 - (z - bz) ** 2)
        rows = slice(max(0, int(by - disc)), min(h, int(by + disc) + 2))
        cols = slice(max(0, int(bx - disc)), min(w, int(bx + disc) + 2))
        hit = (yy[rows, cols] - by) ** 2 + (xx[rows, cols] - bx) ** 2 <= disc**2
        labels[rows, cols][hit] = int(label)
    labels[~inside] = 0
    image = np.asarray(_MATERIAL_LEVELS[spec.family])[labels]
    if spec.cupping:  # beam hardening: darkest at the centre, falling off as (r / R)^2 to the edge
        image = np.where(inside, image * (1.0 - spec.cupping * (1.0 - (centre_distance / geo.radius) ** 2)), image)
    return ndimage.gaussian_filter(image, 0.7), labels


def _material_noise(spec: PhantomSpec, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise correlated over about a voxel (the reconstruction filter) and stronger where the sample is dense."""
    field = ndimage.gaussian_filter(rng.normal(size=image.shape), 0.8)
    return spec.noise * field / field.std() * (0.5 + image)


def _check_family(name: str) -> None:
    if name not in FAMILIES:
        raise SrjaxError(f"unknown phantom family {name!r}; choose one of {', '.join(FAMILIES)}")


def _geometry_of(spec: PhantomSpec):
    _check_family(spec.family)
    return _geometry(spec) if spec.family == "magnesium" else _material(spec)


def phantom_slice(spec: PhantomSpec, z: int, geometry=None) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, labels uint8) of slice ``z``."""
    geo = geometry or _geometry_of(spec)
    magnesium = spec.family == "magnesium"
    image, labels = (_clean_slice if magnesium else _material_slice)(spec, geo, z)
    rng = np.random.default_rng([spec.seed, z])
    if spec.fbp:
        detector_rng = np.random.default_rng([spec.seed, 2**31])
        offsets = detector_rng.normal(0.0, spec.rings * 4, min(image.shape))
        image = _fbp(spec, image, rng, offsets)
    else:
        noise = rng.normal(0.0, spec.noise, image.shape) if magnesium else _material_noise(spec, image, rng)
        image = image + _rings(spec, geo) + noise
    return image.astype(np.float32), labels


def make_phantom(spec: PhantomSpec = PhantomSpec(), progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Whole phantom in memory: (volume float32 [N,H,W], labels uint8 [N,H,W])."""
    from srjax.progress import bar as progress_bar

    geo = _geometry_of(spec)
    volume = np.empty(spec.shape, np.float32)
    labels = np.empty(spec.shape, np.uint8)
    for z in progress_bar(range(spec.shape[0]), desc="phantom", unit="slice", disable=not progress):
        volume[z], labels[z] = phantom_slice(spec, z, geo)
    return volume, labels


# Each family at its own settings; ``family(name, shape, seed)`` sizes one.
FAMILIES = {
    "magnesium": PhantomSpec(),
    "composite": PhantomSpec(family="composite", noise=0.07, rings=0.02),
    "cupping": PhantomSpec(family="composite", noise=0.07, rings=0.02, cupping=0.5),
    "rock": PhantomSpec(family="rock", noise=0.05, rings=0.02),
}
CLASSES = {name: 4 if spec.family == "magnesium" else len(_MATERIAL_LEVELS[spec.family])
           for name, spec in FAMILIES.items()}


def family(name: str, shape=(48, 160, 160), seed: int = 0) -> PhantomSpec:
    _check_family(name)
    return dataclasses.replace(FAMILIES[name], shape=tuple(shape), seed=seed)
