"""Run configuration: frozen dataclasses read from TOML, overridable by `section.key=value`.

Every value is checked on load; an unknown key or an impossible value raises ConfigError
with one line that names the key. The names a config may use come from registry.py; building
the model, optimizer and the rest from a config is in build.py.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from . import sizing
from .registry import ACTIVATIONS, INITIALIZERS, LOSSES, OPTIMIZERS, SCHEDULES
from .sizing import TRAIN_IMAGES, LayerSpecError, short

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    """A bad configuration; str() names the key and what is wrong."""


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist"
    validation: float = 0.1          # fraction of train (< 1) or a count of images (>= 1)


@dataclass(frozen=True)
class ModelConfig:
    hidden: tuple[int, ...] = (256, 128)
    activation: str = "ReLU"
    init: str = "he"
    dropout: float = 0.2
    batch_norm: bool = False
    # Any other network: a list of layer tables ([[model.layers]] type = "Dense", n_in = ...),
    # as Sequential.architecture() writes them. When given, the MLP keys above are ignored.
    layers: tuple[dict, ...] = ()


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly training-set augmentation; all zero = off."""
    shift: float = 0.0               # max shift in pixels
    rotate: float = 0.0              # max rotation in degrees
    scale: float = 0.0               # max relative scale change (0.1 = +-10 %)
    elastic_alpha: float = 0.0       # elastic distortion strength (Simard 2003), 0 = off
    elastic_sigma: float = 4.0       # smoothing of the displacement field, pixels
    flip: float = 0.0                # probability of a left-right mirror (garments, not digits)
    erase: float = 0.0               # probability of random erasing (Zhong et al. 2017)
    erase_area: float = 0.3          # largest erased share of the image (smallest: 0.02)

    @property
    def enabled(self) -> bool:
        return any(getattr(self, key) for key in AUGMENTATIONS)


# The augment keys that change images (0 = off); elastic_sigma and erase_area only shape them.
AUGMENTATIONS = ("shift", "rotate", "scale", "elastic_alpha", "flip", "erase")


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "sgd"                # a name in registry.OPTIMIZERS
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    alpha: float = 0.99              # RMSprop smoothing
    eps: float = 1e-8
    clip_value: float = 0.0          # 0 = off
    clip_norm: float = 0.0           # 0 = off


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "cosine"             # a name in registry.SCHEDULES
    warmup: float = 0.0              # epochs of linear warm-up (cosine)
    milestones: tuple[int, ...] = ()  # step decay epochs
    gamma: float = 0.1               # step / exponential factor
    min_factor: float = 0.0          # cosine floor, as a fraction of lr
    patience: int = 3                # plateau
    pct_start: float = 0.3           # one-cycle


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 20
    batch_size: int = 128            # 0 = full batch (plain gradient descent)
    seed: int = 0
    loss: str = "cross_entropy"      # a name in registry.LOSSES
    label_smoothing: float = 0.0
    early_stopping: int = 0          # patience in epochs on val_accuracy; 0 = off


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    description: str = ""

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_SECTION_CLASSES = {f.name: f.default_factory for f in fields(Config) if f.name != "description"}
# Keys whose value is a name, and the names each may take (from the registries).
CHOICES = {
    "data.dataset": ("mnist", "fashion-mnist"),
    "model.activation": tuple(ACTIVATIONS),
    "model.init": tuple(sorted(INITIALIZERS)),
    "optimizer.name": tuple(OPTIMIZERS),
    "schedule.name": tuple(SCHEDULES),
    "training.loss": tuple(LOSSES),
}

INT_MAX = 2**63 - 1                  # what NumPy's int64 holds (seeds, epochs, sizes)
CONFIG_FILE_LIMIT = 1 << 20          # bytes; a config is a few kB, /dev/zero is endless


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Convert a TOML value to the type of the field's default, or raise ConfigError."""
    def bad(what: str):
        return ConfigError(f"{key}: expected {what}, got {short(value)}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        if abs(value) > INT_MAX:
            raise bad(f"an integer of at most {INT_MAX}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        try:
            value = float(value)             # an int of 400 digits overflows here
        except OverflowError:
            raise bad("a finite number") from None
        if not math.isfinite(value):
            raise bad("a finite number")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if key == "model.layers":
        if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, dict) and isinstance(v.get("type"), str) for v in value):
            raise bad("a list of layer tables, each with a type")
        return tuple(dict(v) for v in value)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        item = default[0] if default else 0
        return tuple(_coerce(key, v, item) for v in value)
    raise bad(type(default).__name__)  # pragma: no cover


def from_dict(raw: dict) -> Config:
    """Build and validate a Config from nested dicts (e.g. parsed TOML)."""
    if not isinstance(raw, dict):
        raise ConfigError("config: expected a table of sections")
    sections = {}
    for name, value in raw.items():
        if name == "description":
            continue
        if name not in _SECTION_CLASSES:
            raise ConfigError(f"unknown config section [{short(name)}]; known: "
                              f"{', '.join(_SECTION_CLASSES)}")
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] must be a table")
    for name, cls in _SECTION_CLASSES.items():
        given = raw.get(name, {})
        defaults = cls()
        known = {f.name for f in fields(cls)}
        kwargs = {}
        for key, value in given.items():
            full = f"{name}.{key}" if isinstance(key, str) else f"{name}.{short(key)}"
            if key not in known:
                raise ConfigError(f"unknown config key {short(full)}; known keys in [{name}]: "
                                  f"{', '.join(sorted(known))}")
            kwargs[key] = _coerce(full, value, getattr(defaults, key))
        sections[name] = cls(**kwargs)
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ConfigError("description: expected a string")
    config = Config(description=description, **sections)
    validate(config)
    return config


def validate(c: Config) -> None:
    """Raise ConfigError naming the first key whose value is impossible."""
    for key, options in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(c, section), name)
        _check(value in options, key, f"must be one of {', '.join(options)}", value)
    _check_data_and_model(c)
    _check_augment(c.augment)
    _check_optimizer(c.optimizer)
    _check_schedule_and_training(c.schedule, c.training)
    _check_size(c)
    if c.model.layers:          # built once (it fits): the layers' own checks have the last word
        from .model import Sequential
        try:
            Sequential.from_architecture(list(c.model.layers), rng=0)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model.layers: {sizing.cut(exc, 200)}") from None


def _check(ok: bool, key: str, what: str, value) -> None:
    if not ok:
        raise ConfigError(f"{key} {what}, got {short(value)}")


def _check_data_and_model(c: Config) -> None:
    validation = c.data.validation
    _check(validation >= 0 and (validation < 1 or validation.is_integer()), "data.validation",
           "must be a fraction in [0, 1) or a whole number of images", validation)
    _check(validation < TRAIN_IMAGES, "data.validation",
           f"must leave training images: the training sets have {TRAIN_IMAGES}", validation)
    _check(all(h > 0 for h in c.model.hidden), "model.hidden", "sizes must be positive",
           list(c.model.hidden))
    _check(0 <= c.model.dropout < 1, "model.dropout", "must be in [0, 1)", c.model.dropout)


def _check_augment(a: AugmentConfig) -> None:
    for key, most in (("shift", 28.0), ("rotate", 360.0), ("elastic_alpha", 1000.0)):
        _check(0 <= getattr(a, key) <= most, f"augment.{key}", f"must be in [0, {most:g}] "
               f"(0 = off)", getattr(a, key))
    _check(0 <= a.scale < 1, "augment.scale", "must be in [0, 1) (0 = off)", a.scale)
    _check(0 <= a.flip <= 1, "augment.flip", "is a probability: must be in [0, 1]", a.flip)
    _check(0 <= a.erase <= 1, "augment.erase", "is a probability: must be in [0, 1]", a.erase)
    _check(0.02 <= a.erase_area <= 1, "augment.erase_area", "must be in [0.02, 1]",
           a.erase_area)
    _check(0 < a.elastic_sigma <= 28, "augment.elastic_sigma", "must be in (0, 28] (pixels)",
           a.elastic_sigma)


def _check_optimizer(o: OptimizerConfig) -> None:
    _check(o.lr > 0, "optimizer.lr", "must be > 0", o.lr)
    _check(0 <= o.momentum < 1, "optimizer.momentum", "must be in [0, 1)", o.momentum)
    _check(not (o.nesterov and o.name == "sgd" and o.momentum == 0), "optimizer.nesterov",
           "needs optimizer.momentum > 0", o.nesterov)
    _check(o.weight_decay >= 0, "optimizer.weight_decay", "must be >= 0", o.weight_decay)
    _check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optimizer.betas",
           "must be two numbers in [0, 1)", list(o.betas))
    _check(0 < o.alpha < 1, "optimizer.alpha", "must be in (0, 1)", o.alpha)
    _check(o.eps > 0, "optimizer.eps", "must be > 0", o.eps)
    _check(o.clip_value >= 0, "optimizer.clip_value", "must be >= 0 (0 = off)", o.clip_value)
    _check(o.clip_norm >= 0, "optimizer.clip_norm", "must be >= 0 (0 = off)", o.clip_norm)


def _check_schedule_and_training(s: ScheduleConfig, t: TrainingConfig) -> None:
    _check(s.warmup >= 0, "schedule.warmup", "must be >= 0", s.warmup)
    _check(all(m > 0 for m in s.milestones), "schedule.milestones", "must be positive epochs",
           list(s.milestones))
    _check(0 < s.gamma <= 1, "schedule.gamma", "must be in (0, 1]", s.gamma)
    _check(0 <= s.min_factor <= 1, "schedule.min_factor", "must be in [0, 1]", s.min_factor)
    _check(s.patience >= 0, "schedule.patience", "must be >= 0", s.patience)
    _check(0 < s.pct_start < 1, "schedule.pct_start", "must be in (0, 1)", s.pct_start)
    _check(t.epochs > 0, "training.epochs", "must be > 0", t.epochs)
    _check(t.batch_size >= 0, "training.batch_size", "must be >= 0 (0 = full batch)",
           t.batch_size)
    _check(0 <= t.label_smoothing < 1, "training.label_smoothing", "must be in [0, 1)",
           t.label_smoothing)
    _check(t.early_stopping >= 0, "training.early_stopping", "must be >= 0 (0 = off)",
           t.early_stopping)
    _check(t.seed >= 0, "training.seed", "must be >= 0", t.seed)


def _check_size(c: Config) -> None:
    """Refuse a network that cannot run on 28x28 images or cannot fit in this machine's
    memory, before any array exists: a MemoryError half-way through building it is no message."""
    key = "model.layers" if c.model.layers else "model.hidden"
    layers = (list(c.model.layers) if c.model.layers
              else sizing.mlp_layers(c.model.hidden, c.model.batch_norm, c.model.dropout))
    n_val = c.data.validation if c.data.validation >= 1 else TRAIN_IMAGES * c.data.validation
    n_train = TRAIN_IMAGES - int(n_val)
    batch = min(c.training.batch_size or n_train, n_train)
    o = c.optimizer
    slots = {"sgd": int(o.momentum > 0), "rmsprop": 1 + int(o.momentum > 0)}.get(o.name, 2)
    try:
        sizing.check_fits(layers, batch, slots)
    except LayerSpecError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """'optimizer.lr=0.01' -> (['optimizer', 'lr'], 0.01); values are TOML, else strings."""
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {short(text)}: expected section.key=value, "
                          f"e.g. optimizer.lr=0.01")
    try:
        parsed = parse_toml(f"v = {value.strip()}", f"--set {short(text)}")["v"]
    except ConfigError as exc:
        if "not valid TOML" not in str(exc):
            raise
        parsed = value.strip()          # a bare word: the string itself (activation=GELU)
    return parts, parsed


def parse_toml(text: str, what: str) -> dict:
    """tomllib.loads with every failure as one ConfigError line naming `what`."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{what}: nested too deeply (arrays or tables inside each other "
                          f"hundreds of levels deep); a config nests a few levels") from None
    except ValueError as exc:          # e.g. an integer of more than 4300 digits
        raise ConfigError(f"{what}: cannot be read ({sizing.cut(exc)})") from None


def read_config_text(path: Path, what: str = "config file") -> str:
    """The text of a config file, read up to CONFIG_FILE_LIMIT bytes; ConfigError otherwise."""
    try:
        with open(path, "rb") as f:
            data = f.read(CONFIG_FILE_LIMIT + 1)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory, not a file") from None
    except PermissionError:
        raise ConfigError(f"{what} {path} cannot be read: permission denied") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    if len(data) > CONFIG_FILE_LIMIT:
        raise ConfigError(f"{what} {path} is larger than {CONFIG_FILE_LIMIT >> 20} MB; "
                          f"a config is a few kB (is it the right file?)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} cannot be read: not UTF-8 text ({exc.reason} at "
                          f"byte {exc.start})") from None


def load_config(path: str | Path | None = None, overrides: list[str] = (),
                base: dict | None = None) -> Config:
    """Defaults <- TOML file (or `base` dict) <- overrides, validated."""
    raw: dict = dict(base or {})
    if path is not None:
        path = Path(path)
        raw = parse_toml(read_config_text(path), f"config file {path}")
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for text in overrides:
        (section, key), value = parse_override(text)
        if section not in _SECTION_CLASSES:
            raise ConfigError(f"unknown config section {short(section)} in --set {short(text)}")
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table, got {short(table)}")
        table[key] = value
    return from_dict(raw)


def replace(config: Config, section: str, **changes) -> Config:
    """A copy with some keys of one section changed (and validated)."""
    new = dataclasses.replace(config, **{section: dataclasses.replace(
        getattr(config, section), **changes)})
    validate(new)
    return new
