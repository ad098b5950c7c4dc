"""Frozen configuration for every stage; loaded from JSON/TOML, overridden by ``key=value``.

Defaults follow the paper (512² crops, batch 16, 200 + 200 epochs, ~2M-parameter net);
``srjax.presets`` holds the named presets. Every field declares its valid range or
choices, and ``validate`` checks them all before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing
from pathlib import Path

from srjax.errors import SrjaxError

# The labels are uint8.
MAX_CLASSES = 255


@dataclasses.dataclass(frozen=True)
class Range:
    """``low <= value <= high``, either end open or absent."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'above' if self.low_open else 'at least'} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'below' if self.high_open else 'at most'} {self.high:g}")
        return "a finite number " + " and ".join(parts) if parts else "a finite number"


def _field(default, valid: Range | None = None, choices: str | None = None, odd: bool = False):
    """A field with its valid range, or the name of the list its value must come from."""
    return dataclasses.field(default=default, metadata={"range": valid, "choices": choices, "odd": odd})


POSITIVE = Range(low=0, low_open=True)
COUNT = Range(low=1)
NON_NEGATIVE = Range(low=0)
FRACTION = Range(low=0, high=1)
FRACTION_BELOW_ONE = Range(low=0, high=1, high_open=True)


@dataclasses.dataclass(frozen=True)
class PseudoConfig:
    method: str = _field("kmeans", choices="method")
    classes: int | str = _field(4, Range(low=2, high=MAX_CLASSES))  # K, or "auto" to choose K from the histogram
    mask: str = ""  # "" (every voxel), "circle" (reconstruction circle) or a mask volume's path


@dataclasses.dataclass(frozen=True)
class DataConfig:
    slices: int = _field(7, COUNT, odd=True)
    crop: int = _field(512, COUNT)
    batch_size: int = _field(16, COUNT)
    read_threads: int = _field(4, COUNT)
    # Share of crops centred on a voxel of a class drawn evenly from those in the slice's
    # labels (nnU-Net forces a third), so a rare class is seen in training at all.
    class_crops: float = _field(0.0, FRACTION)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    # The paper's net, without skips: it reaches its decoder only through the bottleneck, so
    # it labels from a wide field and corrects drift and cupping; what it blurs, the guard restores.
    name: str = _field("unet_noskip", choices="model")
    width: str = _field("paper", choices="width")
    dropout: float = _field(0.1, FRACTION_BELOW_ONE)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The loss and every loss's parameters, at the defaults of the paper that proposed it."""

    name: str = _field("label_smoothing", choices="loss")
    smoothing: float = _field(0.1, FRACTION_BELOW_ONE)  # label_smoothing: epsilon
    soft_beta: float = _field(0.95, FRACTION)  # bootstrap_soft: weight of the label against the prediction
    hard_beta: float = _field(0.8, FRACTION)  # bootstrap_hard
    gce_q: float = _field(0.7, Range(low=0, high=1, low_open=True))
    sce_alpha: float = _field(0.1, NON_NEGATIVE)
    sce_beta: float = _field(1.0, NON_NEGATIVE)
    focal_gamma: float = _field(2.0, NON_NEGATIVE)


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """How long a training stage runs and how it steps: what stage 2 and stage 3 share."""

    epochs: int = _field(200, COUNT)
    steps: int = _field(0, NON_NEGATIVE)  # 0: as many as the epochs give; else exactly this many
    optimizer: str = _field("adam", choices="optimizer")
    learning_rate: float = _field(1e-3, POSITIVE)  # the peak, which the schedule scales
    schedule: str = _field("constant", choices="schedule")
    warmup_steps: int = _field(0, NON_NEGATIVE)
    weight_decay: float = _field(0.0, NON_NEGATIVE)  # adamw only


@dataclasses.dataclass(frozen=True)
class Stage2Config(TrainingConfig):
    # Random rotations/flips here too, so the stage-2 model is as good on the weak views
    # it labels as teacher in stage 3 as on the canonical orientation.
    weak_augment: bool = True


@dataclasses.dataclass(frozen=True)
class Stage3Config(TrainingConfig):
    method: str = _field("unbiased_teacher", choices="stage3")
    confidence: float = _field(0.5, FRACTION_BELOW_ONE)
    # Also keep each class's most confident share of the batch's pixels, whatever ``confidence`` says.
    class_keep: float = _field(0.0, FRACTION)
    ema: float = _field(0.99, FRACTION)
    # The EMA rate at step t is min(1 - 1/(t + 1), ema) (UniMatch v2's warm-up): the teacher
    # follows the student closely at first.
    ema_warmup: bool = False
    strong_probability: float = _field(0.5, FRACTION)
    # Weight of the loss against the pseudo labels next to the teacher's. The paper drops it
    # (0); without it the teacher's small biases compound and well-clustered phases erode.
    anchor: float = _field(1.0, NON_NEGATIVE)
    # Steps over which the anchor's weight falls linearly to 0 (0: held for the whole stage):
    # the pseudo labels steer only the start of stage 3.
    anchor_fade: int = _field(0, NON_NEGATIVE)
    # Probability a student crop gets a box of the next crop pasted in, with the teacher's
    # labels: it undoes most of the drift the pseudo labels carry (README, "What mattered").
    cutmix: float = _field(0.5, FRACTION)
    # Dihedral views the teacher's probabilities are averaged over when it labels a crop (test-time augmentation).
    teacher_views: int = _field(1, Range(low=1, high=8))


@dataclasses.dataclass(frozen=True)
class SparseConfig:
    """A few labelled pixels: given (``srjax run --labels``), or for studies ``oracle_slices``
    whole slices of the ground truth chosen by ``sampler`` (``srjax sample``'s samplers on
    tile statistics). Where a pixel is labelled, stages 2 and 3 learn its label with
    weight ``weight`` (the supervised term of Unbiased Teacher, which the paper drops for
    want of labels) instead of the pseudo label or the teacher's."""

    weight: float = _field(1.0, NON_NEGATIVE)
    # Share of each batch's crops centred on a labelled pixel: a few labelled slices are
    # otherwise seldom in a crop at all.
    labelled_crops: float = _field(0.25, FRACTION)
    oracle_slices: int = _field(0, NON_NEGATIVE)
    sampler: str = _field("dids", choices="sampler")


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = _field(0, NON_NEGATIVE)
    checkpoint_every: int = _field(100, COUNT)
    # Slices labelled at once; "auto": as many as fit in a share of the device's free memory.
    predict_batch: int | str = _field("auto", COUNT)
    # Inference arithmetic: bfloat16 halves memory traffic on GPUs, at a cost in labels the
    # README measures (Performance); float32 is what the net was trained in.
    predict_precision: str = _field("float32", choices="precision")
    # Label slices in half-overlapping windows of the training crop, the field GroupNorm was
    # trained on, instead of whole slices at once as the paper does. The whole slice gives
    # the no-skip net the context it needs under beam-hardening cupping (README, "Experiments").
    predict_tiled: bool = False
    predict_views: int = _field(1, Range(low=1, high=8))  # dihedral views averaged when labelling the volume
    # Stage 3's intensity guard (srjax.guard): a voxel whose value lies more than this many
    # noise sd from its class's local mean goes to the class its value is nearest (0: off).
    guard: float = _field(3.0, NON_NEGATIVE)
    guard_block: int = _field(8, COUNT)  # voxels per side of the blocks the class means are smoothed over
    pseudo: PseudoConfig = PseudoConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    stage2: Stage2Config = Stage2Config()
    stage3: Stage3Config = Stage3Config()
    sparse: SparseConfig = SparseConfig()


# Settings that cannot change a run's results: a run directory accepts a rerun that changes them.
RESULT_NEUTRAL = ("checkpoint_every", "predict_batch", "data.read_threads")


def to_dict(config: Config) -> dict:
    return dataclasses.asdict(config)


def flat(config: Config) -> dict:
    """``{"data.crop": 512, ...}`` for every key."""
    return dict(_flatten(to_dict(config)))


def differences(old: dict, new: Config) -> list[str]:
    """The result-changing keys on which a recorded config (a dict) and ``new`` differ, as 'key: old -> new'.
    A key the record lacks was added since, with a default that does what the code did before."""
    before, after = {**flat(Config()), **dict(_flatten(old))}, flat(new)
    keys = sorted(set(before) | set(after))
    return [f"{key}: {before.get(key, '(absent)')!r} -> {after.get(key, '(absent)')!r}"
            for key in keys if key not in RESULT_NEUTRAL and before.get(key) != after.get(key)]


def from_dict(data, base: Config | None = None, source: str = "config") -> Config:
    """Nested dict -> Config; keys not given keep the values of ``base``."""
    if not isinstance(data, dict):
        raise SrjaxError(f"{source} holds a {type(data).__name__}, not a table of keys; "
                         'write it as {"stage2": {"epochs": 50}} (JSON) or [stage2] epochs = 50 (TOML)')
    config = base or Config()
    for key, value in _flatten(data):
        config = _set(config, key, value, source)
    return config


def load(path: str | Path, base: Config | None = None) -> Config:
    path = Path(path)
    if not path.is_file():
        raise SrjaxError(f"config file {path} does not exist; pass a .json or .toml file")
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SrjaxError(f"config file {path} cannot be parsed: {err}") from None
    return from_dict(data, base, source=f"config file {path}")


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply ``key=value`` strings; ``model=NAME`` is short for ``model.name=NAME``."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SrjaxError(f"--set {item!r} is not key=value; for example --set stage2.epochs=50")
        config = _set(config, key.strip(), value.strip(), "--set")
    return config


def _flatten(data: dict, prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def valid_keys(config: Config = Config()) -> list[str]:
    return list(flat(config))


def _unknown(key: str, source: str) -> SrjaxError:
    return SrjaxError(f"{source}: unknown config key {key!r}; valid keys: {', '.join(valid_keys())}")


def _set(config: Config, key: str, value, source: str) -> Config:
    section, _, leaf = key.partition(".")
    names = {f.name for f in dataclasses.fields(config)}
    if section not in names:
        raise _unknown(key, source)
    current = getattr(config, section)
    if dataclasses.is_dataclass(current):
        leaf = leaf or "name"
        if leaf not in {f.name for f in dataclasses.fields(current)}:
            raise _unknown(key, source)
        new = dataclasses.replace(current, **{leaf: _coerce(type(current), leaf, value, key, source)})
        return dataclasses.replace(config, **{section: new})
    if leaf:
        raise _unknown(key, source)
    return dataclasses.replace(config, **{section: _coerce(type(config), section, value, key, source)})


def _coerce(cls, name: str, value, key: str, source: str):
    """``value`` (a string from --set, or a JSON/TOML value) as the field's type, strictly:
    no booleans for numbers, no fractions for integers, no numbers for booleans."""
    kind = typing.get_type_hints(cls)[name]
    bad = SrjaxError(f"{source}: {key}={value!r} is not "
                     + ("an integer or 'auto'" if kind == int | str else f"a valid {getattr(kind, '__name__', kind)}"))
    if kind == int | str:  # a count or the word "auto"
        if value == "auto":
            return "auto"
        kind = int
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise bad
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise bad
    if kind is str:
        if not isinstance(value, str):
            raise bad
        return value
    if kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise bad
            return int(value)
        try:
            return int(value)
        except ValueError:
            raise bad from None
    try:
        return float(value)
    except ValueError:
        raise bad from None


def _choices(kind: str, config: Config) -> tuple[str, ...]:
    from srjax.losses import LOSS_NAMES
    from srjax.models import MODEL_NAMES, width_names
    from srjax.optim import OPTIMIZERS, SCHEDULES
    from srjax.predict import PRECISIONS
    from srjax.analysis.samplers import METHODS as SAMPLERS
    from srjax.pseudo import METHODS
    from srjax.train import STAGE3_METHODS

    return {"method": METHODS, "model": MODEL_NAMES, "loss": LOSS_NAMES, "optimizer": OPTIMIZERS,
            "schedule": SCHEDULES, "stage3": tuple(STAGE3_METHODS), "precision": tuple(PRECISIONS), "sampler": SAMPLERS,
            "width": width_names(config.model.name) if config.model.name in MODEL_NAMES else ()}[kind]


def validate(config: Config) -> None:
    """Every setting inside its range or choices, and the settings that must agree with
    each other; one error naming the key and what it accepts. Needs no data."""
    sections = [("", config)] + [(f"{f.name}.", getattr(config, f.name)) for f in dataclasses.fields(config)
                                 if dataclasses.is_dataclass(getattr(config, f.name))]
    for prefix, section in sections:
        for field in dataclasses.fields(section):
            value, meta = getattr(section, field.name), field.metadata
            key = prefix + field.name
            if meta.get("range") is not None and value != "auto" and not meta["range"].holds(value):
                raise SrjaxError(f"{key}={value!r} is out of range; it must be {meta['range']}")
            if meta.get("odd") and value % 2 == 0:
                raise SrjaxError(f"{key}={value} must be odd: the target is the middle slice of the stack")
            if meta.get("choices"):
                choices = _choices(meta["choices"], config)
                if value not in choices:
                    raise SrjaxError(f"{key}={value!r} is not one of {', '.join(choices)}")
    from srjax.pseudo import check_classes

    check_classes(config.pseudo.method, config.pseudo.classes, "pseudo.classes")
