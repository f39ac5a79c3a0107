"""A sweep SPEC file: base config + search space + Optuna sampler and pruner, checked up front.

Everything here is checked before a single trial runs: an unknown key, an empty range or a
value the config would refuse raises SpecError with one line. Also: a Config as TOML text.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError, from_dict, parse_toml, read_config_text
from ..sizing import short

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "successive-halving")
TOP_KEYS = {"description", "base", "trials", "timeout", "heartbeat_interval", "config",
            "sampler", "pruner", "params"}
RANGE_KEYS = {"low", "high", "log", "step"}


class SpecError(ValueError):
    """A bad sweep spec; str() is one line naming the key."""


@dataclass(frozen=True)
class Dist:
    """One Optuna parameter: kind is categorical | int | float; choices as Optuna stores them."""
    name: str
    kind: str
    choices: tuple = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None


@dataclass
class Spec:
    path: Path
    description: str
    base: dict                                   # raw config tables (base file + [config])
    dists: list[Dist]
    sampler: dict                                # {"name": ..., Optuna keyword arguments}
    pruner: dict
    trials: int | None
    timeout: float | None
    heartbeat_interval: int
    hidden_shape: dict = field(default_factory=dict)  # "model.hidden" -> width/depth params

    @property
    def grid(self) -> bool:
        return self.sampler["name"] == "grid"

    def grid_size(self) -> int:
        n = 1
        for d in self.dists:
            n *= len(d.choices)
        return n

    def target_trials(self, trials: int | None = None) -> int:
        """How many trials the study should hold: --trials, else the spec's, else the grid."""
        n = trials or self.trials
        if self.grid:
            return min(n, self.grid_size()) if n else self.grid_size()
        if not n:
            raise SpecError(f"{self.path}: give trials = N in the spec or --trials N "
                            f"(only a grid knows its own size)")
        return n

    def config_for(self, params: dict[str, Any]):
        """The run Config for one trial's params (values as Optuna stores them)."""
        raw = {k: dict(v) if isinstance(v, dict) else v for k, v in self.base.items()}
        values = {name: decode(v) for name, v in params.items()}
        for key, parts in self.hidden_shape.items():
            width, depth = values.pop(parts["width"]), values.pop(parts["depth"])
            values[key] = [int(width)] * int(depth)
        for key, value in values.items():
            section, name = key.split(".", 1)
            raw.setdefault(section, {})[name] = value
        return from_dict(raw)

    def to_json(self) -> str:
        """What identifies the search: a study resumed with another spec is refused."""
        return json.dumps({"base": self.base, "params": [d.__dict__ for d in self.dists],
                           "sampler": self.sampler, "pruner": self.pruner}, sort_keys=True,
                          default=list)


def encode(value):
    """Optuna stores categorical choices as str/int/float/bool: lists become JSON text."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def decode(value):
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    return value


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _whole(x) -> bool:
    """An int that is not a bool (True is an int in Python) and fits in int64."""
    return isinstance(x, int) and not isinstance(x, bool) and abs(x) < 2**63


def _dist(name: str, value, where: str) -> Dist:
    if isinstance(value, list):
        value = {"choices": value}
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a list of values or a table with low and high, "
                        f"got {short(value)}")
    if "choices" in value:
        if set(value) != {"choices"} or not isinstance(value["choices"], list):
            raise SpecError(f"{where}: a choice table has only choices = [...]")
        choices = value["choices"]
        if not choices:
            raise SpecError(f"{where}: empty list of values")
        encoded = tuple(encode(c) for c in choices)
        if len(set(map(json.dumps, encoded))) != len(encoded):
            raise SpecError(f"{where}: a value is listed twice")
        return Dist(name, "categorical", encoded)
    unknown = set(value) - RANGE_KEYS
    if unknown:
        raise SpecError(f"{where}: unknown key {sorted(unknown)[0]!r}; a range has "
                        f"low, high and optionally log = true or step")
    if "low" not in value or "high" not in value:
        raise SpecError(f"{where}: a range needs both low and high")
    low, high, log, step = value["low"], value["high"], value.get("log", False), value.get("step")
    if not (_number(low) and _number(high)) or (step is not None and not _number(step)):
        raise SpecError(f"{where}: low, high and step must be numbers")
    if not isinstance(log, bool):
        raise SpecError(f"{where}: log must be true or false")
    if not low < high:
        raise SpecError(f"{where}: empty range: low {low} must be below high {high}")
    if log and low <= 0:
        raise SpecError(f"{where}: a log range needs low > 0, got {low}")
    if log and step is not None:
        raise SpecError(f"{where}: log and step cannot be combined (Optuna)")
    if step is not None and step <= 0:
        raise SpecError(f"{where}: step must be > 0, got {step}")
    kind = "int" if all(isinstance(x, int) for x in (low, high, step or 1)) else "float"
    return Dist(name, kind, low=low, high=high, log=log, step=step)


def _table(raw: dict, key: str, choices: tuple, default: str) -> dict:
    table = raw.get(key, {"name": default})
    if isinstance(table, str):
        table = {"name": table}
    if not isinstance(table, dict):
        raise SpecError(f"[{key}] must be a table with name = one of {', '.join(choices)}")
    table = dict(table)
    table.setdefault("name", default)
    if table["name"] not in choices:
        raise SpecError(f"{key}.name must be one of {', '.join(choices)}, "
                        f"got {short(table['name'])}")
    return table


def _read_toml(path: Path, what: str) -> dict:
    """The same reading as a config file: bounded size, one line for any damage."""
    try:
        return parse_toml(read_config_text(path, what), f"{what} {path}")
    except ConfigError as exc:
        raise SpecError(str(exc)) from None


def _base_path(spec_path: Path, name: str) -> Path:
    """base = "..." relative to the spec file, else to the working directory."""
    for candidate in (spec_path.parent / name, Path(name)):
        if candidate.is_file():
            return candidate
    raise SpecError(f"base: config file {name!r} not found next to {spec_path} or in "
                    f"the working directory")


def load_spec(path: str | Path) -> Spec:
    """Read and check a sweep spec; SpecError (one line) on anything wrong."""
    path = Path(path)
    raw = _read_toml(path, "sweep spec")
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise SpecError(f"{path}: unknown key {sorted(unknown)[0]!r}; known: "
                        f"{', '.join(sorted(TOP_KEYS))}")
    base, config = _base_config(raw, path)
    params = raw.get("params")
    if not isinstance(params, dict) or not params:
        raise SpecError(f"{path}: no [params]: give the search space, e.g. "
                        f'"optimizer.lr" = {{ low = 1e-3, high = 0.3, log = true }}')
    dists, hidden_shape = _search_space(params)
    sampler = _table(raw, "sampler", SAMPLERS, "tpe")
    pruner = _table(raw, "pruner", PRUNERS, "none")
    spec = Spec(path=path, description=str(raw.get("description", "")), base=base,
                dists=dists, sampler=sampler, pruner=pruner, trials=raw.get("trials"),
                timeout=raw.get("timeout"),
                heartbeat_interval=raw.get("heartbeat_interval", 10),
                hidden_shape=hidden_shape)
    _check_settings(spec, raw)
    _check_values(spec)
    make_sampler(spec, 0)      # Optuna checks its own keyword arguments
    make_pruner(spec)
    if not config.data.validation and "data.validation" not in params:
        raise SpecError("base config: data.validation is 0, but trials are judged on "
                        "validation accuracy; set data.validation (e.g. 0.1 or 5000)")
    return spec


def _base_config(raw: dict, path: Path) -> tuple[dict, Config]:
    """The base config file (base = "..."), updated section by section by [config]: as a
    dict (trials start from it) and checked as a Config."""
    base: dict = {}
    if "base" in raw:
        if not isinstance(raw["base"], str):
            raise SpecError("base: expected the path of a config file")
        base = _read_toml(_base_path(path, raw["base"]), "base config")
    inline = raw.get("config", {})
    if not isinstance(inline, dict):
        raise SpecError("[config] must be a table of config sections")
    base = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, table in inline.items():
        if isinstance(table, dict) and isinstance(base.get(section), dict):
            base[section].update(table)
        else:
            base[section] = table
    try:
        return base, from_dict(base)
    except ConfigError as exc:
        raise SpecError(f"base config: {exc}") from None


def _search_space(params: dict) -> tuple[list[Dist], dict]:
    """[params] as distributions, and model.hidden given as { width, depth } (two of them)."""
    dists, hidden_shape = [], {}
    for key, value in params.items():
        where = f"params.{key}"
        if key.count(".") != 1:
            raise SpecError(f"{where}: expected a config key section.key, e.g. optimizer.lr")
        if key == "model.hidden" and isinstance(value, dict) and {"width", "depth"} == set(value):
            parts = {p: f"{key}.{p}" for p in ("width", "depth")}
            for p, name in parts.items():
                d = _dist(name, value[p], f"{where}.{p}")
                dists.append(d)
                values = d.choices if d.kind == "categorical" else (d.low, d.high)
                if not all(_whole(v) and v > 0 for v in values):
                    raise SpecError(f"{where}.{p}: expected positive whole numbers")
            hidden_shape[key] = parts
            continue
        dists.append(_dist(key, value, where))
    return dists, hidden_shape


def _check_settings(spec: Spec, raw: dict) -> None:
    """trials, timeout and heartbeat_interval; a grid takes lists of values only."""
    checks = (("trials", spec.trials is None or (_whole(spec.trials) and spec.trials > 0),
               "an integer > 0"),
              ("timeout", spec.timeout is None or (_number(spec.timeout) and spec.timeout > 0),
               "seconds > 0"),
              ("heartbeat_interval", _whole(spec.heartbeat_interval)
               and spec.heartbeat_interval > 0, "whole seconds > 0"))
    for key, ok, what in checks:
        if not ok:
            raise SpecError(f"{key}: expected {what}, got {short(raw.get(key))}")
    if spec.grid:
        for d in spec.dists:
            if d.kind != "categorical":
                raise SpecError(f"params.{d.name}: the grid sampler needs a list of values, "
                                f"not a range")


def _check_values(spec: Spec) -> None:
    """Every listed value and both ends of every range, one at a time, on the base config."""
    first = {}
    for d in spec.dists:
        first[d.name] = d.choices[0] if d.kind == "categorical" else d.low
    for d in spec.dists:
        candidates = d.choices if d.kind == "categorical" else (d.low, d.high)
        for value in candidates:
            try:
                spec.config_for({**first, d.name: value})
            except ConfigError as exc:
                raise SpecError(f"params.{d.name} = {short(decode(value))}: {exc}") from None


def _optuna_kwargs(table: dict, what: str) -> dict:
    return {k: v for k, v in table.items() if k != "name"}


def make_sampler(spec: Spec, worker: int = 0):
    """The Optuna sampler; worker k of several uses seed + k so they do not propose alike."""
    import optuna

    kwargs = _optuna_kwargs(spec.sampler, "sampler")
    if kwargs.get("seed") is not None:
        kwargs["seed"] = int(kwargs["seed"]) + worker
    name = spec.sampler["name"]
    try:
        if name == "grid":
            space = {d.name: list(d.choices) for d in spec.dists}
            return optuna.samplers.GridSampler(space, **kwargs)
        cls = optuna.samplers.RandomSampler if name == "random" else optuna.samplers.TPESampler
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"[sampler] {name}: {exc}") from None


def make_pruner(spec: Spec):
    import optuna

    name, kwargs = spec.pruner["name"], _optuna_kwargs(spec.pruner, "pruner")
    classes = {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
               "successive-halving": optuna.pruners.SuccessiveHalvingPruner}
    try:
        return classes[name](**kwargs)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"[pruner] {name}: {exc}") from None


def suggest(trial, spec: Spec) -> dict[str, Any]:
    """Ask the trial for every parameter (Optuna's suggest_* API); values as stored."""
    params = {}
    for d in spec.dists:
        if d.kind == "categorical":
            params[d.name] = trial.suggest_categorical(d.name, list(d.choices))
        elif d.kind == "int":
            params[d.name] = trial.suggest_int(d.name, d.low, d.high, step=d.step or 1,
                                               log=d.log)
        else:
            params[d.name] = trial.suggest_float(d.name, d.low, d.high, step=d.step, log=d.log)
    return params


def grid_points(spec: Spec) -> list[dict]:
    """Every combination of a grid spec, in the order the lists give them."""
    names = [d.name for d in spec.dists]
    return [dict(zip(names, combo)) for combo in itertools.product(*(d.choices
                                                                      for d in spec.dists))]


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def config_toml(config_dict: dict, header: str = "") -> str:
    """A config dict (Config.to_dict()) as a TOML file that `barenet train --config` reads."""
    lines = [f"# {line}" for line in header.splitlines()]
    if config_dict.get("description"):
        lines.append(f"description = {_toml_value(config_dict['description'])}")
    for section, table in config_dict.items():
        if not isinstance(table, dict):
            continue
        lines += ["", f"[{section}]"]
        layers = table.get("layers") if section == "model" else None
        for key, value in table.items():
            if key == "layers" and section == "model":
                continue
            lines.append(f"{key} = {_toml_value(value)}")
        for layer in layers or ():
            lines += ["", "[[model.layers]]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in layer.items()]
    return "\n".join(lines) + "\n"
