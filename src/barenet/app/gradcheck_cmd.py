"""`barenet gradcheck`: every registered layer, every loss and a whole network, checked in float64.

Each backward pass is compared with centered differences (barenet.gradcheck); the table lists
one row per input or parameter gradient. Every layer in barenet.registry.LAYERS is built with
small sizes guessed from its signature, so a layer added there is checked too.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Iterator

import click
import numpy as np

from ..gradcheck import check_layer, check_model, numerical_gradient, relative_error
from ..layers import Layer
from ..registry import LAYERS, LOSSES

THRESHOLD = 1e-6

# Constructor arguments a layer's signature may ask for, and the small sizes used for them.
_IN_NAMES = {"n_in", "in_features", "num_features", "in_channels", "channels", "features"}
_OUT_NAMES = {"n_out", "out_features", "out_channels", "filters"}
_KERNEL_NAMES = {"kernel_size", "kernel", "pool_size", "size", "window"}
_WIDTH = 4          # features (N, D) or channels (N, C, H, W) going into a layer under test


def away_from_kink(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Standard normal values with |x| >= 0.1, so a step of 1e-6 never crosses ReLU's kink."""
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.1, np.where(x < 0, -0.1, 0.1), x)


class FixedMask(Layer):
    """Wraps a stochastic layer and rewinds its generator before every forward pass.

    Train-mode Dropout then draws the same mask on every call, so finite differences see one
    deterministic function while the real masking code runs.
    """

    def __init__(self, layer: Layer):
        self.layer = layer
        self.input_ndim = layer.input_ndim
        self._state = layer.rng.bit_generator.state

    def forward(self, x):
        self.layer.rng.bit_generator.state = self._state
        return self.layer.forward(x)

    def backward(self, grad_out, input_grad=True):
        return self.layer.backward(grad_out, input_grad)

    def parameters(self):
        return self.layer.parameters()


def _perturb_parameters(layer: Layer, rng: np.random.Generator) -> None:
    # Zero biases and unit gammas hide mistakes (a gradient that ignores b looks right at b = 0).
    for p in layer.parameters():
        p.data += 0.5 * rng.standard_normal(p.data.shape)


def _build(cls: type[Layer], rng: np.random.Generator) -> Layer:
    """An instance in float64 with small sizes, from the names in the constructor's signature."""
    kwargs = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name == "dtype":
            kwargs[name] = np.float64
        elif name == "rng":
            kwargs[name] = rng
        elif param.default is not param.empty:
            continue
        elif name in _IN_NAMES:
            kwargs[name] = _WIDTH
        elif name in _OUT_NAMES:
            kwargs[name] = 3
        elif name in _KERNEL_NAMES:
            kwargs[name] = 2
        else:
            raise TypeError(f"no small value known for required argument {name!r}")
    return cls(**kwargs)


def _input_for(layer: Layer, rng: np.random.Generator) -> np.ndarray:
    if layer.input_ndim == 4:
        return away_from_kink((2, _WIDTH, 6, 6), rng)          # (N, C, H, W)
    return away_from_kink((5, _WIDTH), rng)                     # (N, D)


def layer_cases(rng: np.random.Generator) -> Iterator[tuple[str, Callable[[], tuple]]]:
    """(label, make) per check; make() -> (layer, x). One or more cases per registered class."""
    for name, cls in LAYERS.items():
        if name == "Dropout":
            def train_mask(cls=cls):
                layer = cls(0.5, rng=rng)
                return FixedMask(layer), away_from_kink((5, _WIDTH), rng)

            def eval_mode(cls=cls):
                layer = cls(0.5, rng=rng)
                layer.training = False
                return layer, away_from_kink((5, _WIDTH), rng)
            yield "Dropout (train, fixed mask)", train_mask
            yield "Dropout (eval)", eval_mode
        elif name == "LeakyReLU":
            # A slope of 0.1 instead of the default 0.01 makes the negative side count.
            yield name, lambda cls=cls: (cls(0.1), away_from_kink((5, _WIDTH), rng))
        elif name == "Flatten":
            yield name, lambda cls=cls: (cls(), away_from_kink((3, 2, 3, 2), rng))
        elif name == "BatchNorm1d":
            # Train mode: the batch statistics depend on x, the case backward must get right.
            def batchnorm(cls=cls):
                layer = _build(cls, rng)
                _perturb_parameters(layer, rng)
                return layer, _input_for(layer, rng)
            yield "BatchNorm1d (train)", batchnorm
        else:
            def generic(cls=cls):
                layer = _build(cls, rng)
                _perturb_parameters(layer, rng)
                if isinstance(getattr(layer, "rng", None), np.random.Generator):
                    layer = FixedMask(layer)
                return layer, _input_for(layer.layer if isinstance(layer, FixedMask)
                                         else layer, rng)
            yield name, generic


def check_losses(rng: np.random.Generator) -> list[tuple[str, str, float]]:
    """(loss, 'logits', relative error) for every loss in barenet.registry.LOSSES."""
    rows = []
    for name, fn in LOSSES.items():
        variants = [(name, fn, rng.integers(0, 4, 5))]
        if "label_smoothing" in inspect.signature(fn).parameters:
            variants.append((f"{name}, smoothing 0.1",
                             lambda z, y, fn=fn: fn(z, y, label_smoothing=0.1),
                             rng.integers(0, 4, 5)))
        if name == "mse":
            variants.append((f"{name} (real targets)", fn, rng.standard_normal((5, 4))))
        for label, loss_fn, targets in variants:
            logits = rng.standard_normal((5, 4))                # (N, K)
            rows.append((label, "logits", _loss_error(loss_fn, logits, targets)))
    return rows


def _loss_error(loss_fn, logits: np.ndarray, targets: np.ndarray) -> float:
    _, analytic = loss_fn(logits, targets)
    numeric = numerical_gradient(lambda: loss_fn(logits, targets)[0], logits)
    return relative_error(analytic, numeric)


def whole_network(rng: np.random.Generator):
    """A float64 MLP using every dense-layer type, with softmax cross-entropy on top."""
    from .. import layers as L
    from ..losses import softmax_cross_entropy
    from ..model import Sequential

    f64 = np.float64
    # No bias before BatchNorm: its gradient is exactly 0 (the mean is subtracted), and the
    # relative error of 0 against rounding noise would be 1.
    model = Sequential(
        L.Dense(6, 7, rng=rng, dtype=f64, bias=False), L.BatchNorm1d(7, dtype=f64), L.ReLU(),
        FixedMask(L.Dropout(0.3, rng=rng)),
        L.Dense(7, 6, rng=rng, dtype=f64), L.Tanh(),
        L.Dense(6, 5, rng=rng, dtype=f64), L.GELU(),
        L.Dense(5, 5, rng=rng, dtype=f64), L.SiLU(),
        L.Dense(5, 4, rng=rng, dtype=f64), L.LeakyReLU(0.1),
        L.Dense(4, 4, rng=rng, dtype=f64), L.Sigmoid(),
        L.Dense(4, 3, rng=rng, dtype=f64))
    for layer in model.layers:
        _perturb_parameters(layer, rng)
    x = rng.standard_normal((6, 6))
    labels = rng.integers(0, 3, 6)
    return model, softmax_cross_entropy, x, labels


def conv_network(rng: np.random.Generator):
    """A float64 CNN over (N, 1, 8, 8) with strides, padding and pooling."""
    from ..losses import softmax_cross_entropy
    from ..model import Sequential

    f64, L = np.float64, LAYERS
    model = Sequential(
        L["Conv2D"](1, 3, 3, padding=1, bias=False, rng=rng, dtype=f64),    # (N, 3, 8, 8)
        L["BatchNorm2d"](3, dtype=f64), L["ReLU"](),
        L["MaxPool2D"](2),                                                    # (N, 3, 4, 4)
        L["Conv2D"](3, 4, 3, stride=2, padding=1, rng=rng, dtype=f64),       # (N, 4, 2, 2)
        L["Tanh"](), FixedMask(L["Dropout2d"](0.3, rng=rng)),
        L["Conv2D"](4, 4, 1, rng=rng, dtype=f64), L["AvgPool2D"](2),         # (N, 4, 1, 1)
        L["Flatten"](), L["Dense"](4, 3, rng=rng, dtype=f64))
    for layer in model.layers:
        _perturb_parameters(layer, rng)
    x = rng.standard_normal((3, 1, 8, 8))
    labels = rng.integers(0, 3, 3)
    return model, softmax_cross_entropy, x, labels


def _network_rows(model, loss_fn, x, labels) -> list[dict]:
    errors = check_model(model, loss_fn, x, labels)
    # check_model names parameters by their position in model.parameters(); name the layer.
    names = ["input"] + [f"{i} {_name(layer)}.{p.name}" for i, layer in enumerate(model.layers)
                         for p in layer.parameters()]
    kind = "CNN" if model.layers[0].input_ndim == 4 else "MLP"
    return [{"kind": "network", "check": f"{kind} ({len(model.layers)} layers)",
             "parameter": param, "relative_error": err}
            for param, err in zip(names, errors.values())]


def run_checks(seed: int = 0) -> list[dict]:
    """Every check as a row: {kind, check, parameter, relative_error}; errors as rows too."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, make in layer_cases(rng):
        try:
            layer, x = make()
            errors = check_layer(layer, x, rng=rng)
        except Exception as exc:                    # a layer we cannot build is a failed check
            rows.append({"kind": "layer", "check": label, "parameter": "-",
                         "relative_error": None, "error": f"{type(exc).__name__}: {exc}"})
            continue
        for param, err in errors.items():
            rows.append({"kind": "layer", "check": label, "parameter": param,
                         "relative_error": err})
    for label, param, err in check_losses(rng):
        rows.append({"kind": "loss", "check": label, "parameter": param, "relative_error": err})
    rows += _network_rows(*whole_network(rng))
    try:
        rows += _network_rows(*conv_network(rng))
    except Exception as exc:                        # conv layers whose arguments changed
        rows.append({"kind": "network", "check": "CNN", "parameter": "-",
                     "relative_error": None, "error": f"{type(exc).__name__}: {exc}"})
    return rows


def _name(layer: Layer) -> str:
    return type(layer.layer if isinstance(layer, FixedMask) else layer).__name__


def _passed(row: dict, threshold: float) -> bool:
    err = row["relative_error"]
    return err is not None and np.isfinite(err) and err < threshold


def _finite(ctx, param, value):
    """FloatRange lets NaN through (every comparison with NaN is false)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


@click.command("gradcheck")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--threshold", type=click.FloatRange(min=0, min_open=True), default=THRESHOLD,
              show_default=True, callback=_finite, help="Largest relative error that passes.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed for inputs, parameters and upstream gradients.")
def command(as_json: bool, threshold: float, seed: int) -> int:
    """Check every layer, loss and a whole network against numerical gradients (float64).

    Exits 0 when every relative error is below the threshold, 1 otherwise.
    """
    rows = run_checks(seed)
    for row in rows:
        row["passed"] = _passed(row, threshold)
    ok = all(row["passed"] for row in rows)
    if as_json:
        click.echo(json.dumps({"threshold": threshold, "passed": ok, "checks": rows}, indent=2))
        return 0 if ok else 1

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"gradient check: float64, centered differences, threshold {threshold:g}")
    table.add_column("check", no_wrap=True)
    table.add_column("gradient", no_wrap=True)
    table.add_column("relative error", justify="right", no_wrap=True)
    table.add_column("result", justify="center", no_wrap=True)
    for i, row in enumerate(rows):
        err = row["relative_error"]
        result = "[green]pass[/]" if row["passed"] else "[bold red]FAIL[/]"
        table.add_row(escape(row["check"]), escape(row["parameter"]),
                      "-" if err is None else f"{err:.2e}", result,
                      end_section=i + 1 < len(rows) and rows[i + 1]["kind"] != row["kind"])
    console = Console()
    console.print(table)
    for row in rows:
        if "error" in row:
            console.print(f"[bold red]{escape(row['check'])}[/]: {escape(row['error'])}",
                          highlight=False)
    failed = sum(not row["passed"] for row in rows)
    if failed:
        console.print(f"[bold red]{failed} of {len(rows)} gradient checks failed[/]")
        return 1
    console.print(f"[green]all {len(rows)} gradient checks passed[/]")
    return 0
