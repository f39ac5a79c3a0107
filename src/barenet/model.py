"""Sequential: a stack of layers with forward, backward, parameters, train/eval, predict.

Also the JSON architecture description that rebuilds a model (used by serialize.py).
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator

import numpy as np

from .init import as_rng
from .layers import BatchNorm1d, Dense, Dropout, Layer, Parameter, softmax
from .parallel import infer
from .registry import LAYERS

PIXEL_SCALE = 1.0 / 255.0


def as_input(x: np.ndarray, dtype=np.float32) -> np.ndarray:
    """uint8 images -> float pixels in [0, 1]; float arrays pass through in `dtype`."""
    if x.dtype == np.uint8:
        return np.multiply(x, np.float32(PIXEL_SCALE), dtype=dtype)
    return x.astype(dtype, copy=False)


class Sequential:
    """Layers applied in order. (N, ...) in, (N, K) logits out."""

    # The training images' subspace (inputspace.InputSpace), when the model file holds one:
    # the apps use it to answer "not sure" for inputs unlike any training image.
    input_space = None

    def __init__(self, *layers: Layer):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        self.layers: list[Layer] = list(layers)
        self.training = True

    def _adapt(self, x: np.ndarray) -> np.ndarray:
        # Images (N, 28, 28) flatten for a Dense first layer and gain a channel axis for a conv;
        # flat rows of a square image, (N, 784), become (N, 1, 28, 28) for a conv.
        want = self.layers[0].input_ndim if self.layers else 2
        if x.ndim > want and want == 2:
            return x.reshape(x.shape[0], -1)
        if x.ndim == 3 and want == 4:
            return x[:, None]
        if x.ndim == 2 and want == 4:                   # flat (N, 784) rows of square images
            side = math.isqrt(x.shape[1])
            if side * side == x.shape[1]:
                return x.reshape(x.shape[0], 1, side, side)
        return x

    as_input = staticmethod(as_input)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, ...) -> logits (N, K); uint8 images are scaled to [0, 1] first, as everywhere."""
        if x.dtype == np.uint8:
            x = as_input(x)
        x = self._adapt(x)
        for layer in self.run_order():
            x = layer.forward(x)
        return x

    __call__ = forward

    def backward(self, grad_out: np.ndarray, *, input_grad: bool = False) -> np.ndarray | None:
        """Backpropagate d loss / d output; fills every Parameter.grad.

        The gradient with respect to the input is computed only when asked for
        (saliency maps, gradient checks): training never needs it.
        """
        g = grad_out
        last = len(self.layers) - 1
        for i, layer in enumerate(reversed(self.run_order())):
            g = layer.backward(g, input_grad=input_grad or i < last)
        return g

    def run_order(self) -> list[Layer]:
        """The layers in the order forward runs them (backward: reversed).

        A ReLU right before a max pool runs after it instead: max(relu(x)) == relu(max(x))
        exactly, since ReLU keeps positive values and their order. The gradient is the same
        too: where a window's maximum is positive both send it to the same first maximum, and
        where it is not, ReLU passes nothing either way. Only the cost changes: the ReLU then
        sees a quarter of the values (2x2 pools), in training and in inference alike.
        """
        order = list(self.layers)
        for i in range(len(order) - 1):
            if order[i].commutes_with_max and order[i + 1].max_pool:
                order[i], order[i + 1] = order[i + 1], order[i]
        return order

    def parameters(self) -> list[Parameter]:
        return [p for layer in self.layers for p in layer.parameters()]

    def train(self) -> Sequential:
        self.training = True
        for layer in self.layers:
            layer.training = True
        return self

    def eval(self) -> Sequential:
        self.training = False
        for layer in self.layers:
            layer.training = False
        return self

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[Sequential]:
        """`with model.evaluating():` eval mode inside the block; afterwards every layer has
        its training flag back, also when the block raised. Nests."""
        saved = self.training, [layer.training for layer in self.layers]
        self.eval()
        try:
            yield self
        finally:
            self.training = saved[0]
            for layer, training in zip(self.layers, saved[1]):
                layer.training = training

    def logits(self, x: np.ndarray, batch_size: int = 10_000) -> np.ndarray:
        """Eval-mode outputs (N, K) before the softmax; uint8 images are scaled to [0, 1].

        forward(x) in eval mode, batch by batch; parallel.infer computes it on every core.
        """
        with self.evaluating():
            try:
                return infer(self, x, batch_size)
            finally:
                self.release()

    def release(self) -> None:
        """Free every layer's kept activations and scratch buffers (see Layer.release)."""
        for layer in self.layers:
            layer.release()

    def predict_proba(self, x: np.ndarray, batch_size: int = 10_000) -> np.ndarray:
        """Class probabilities (N, K) in eval mode; uint8 images are scaled to [0, 1]."""
        logits = self.logits(x, batch_size)
        return softmax(logits) if logits.size else logits

    def predict(self, x: np.ndarray, batch_size: int = 10_000) -> np.ndarray:
        """Predicted class per row: the argmax of the logits (softmax keeps the order)."""
        logits = self.logits(x, batch_size)
        return logits.argmax(axis=1) if logits.size else np.zeros(len(x), np.int64)

    # Description and state, for model files and checkpoints.

    def architecture(self) -> list[dict]:
        return [{"type": type(layer).__name__, **layer.config()} for layer in self.layers]

    @classmethod
    def from_architecture(cls, spec: list[dict], *, rng=None, dtype=np.float32) -> Sequential:
        rng = as_rng(rng)
        layers = []
        for entry in spec:
            entry = dict(entry)
            kind = entry.pop("type", None)
            if kind not in LAYERS:
                raise ValueError(f"unknown layer type {kind!r}")
            layer_cls = LAYERS[kind]
            kwargs = dict(entry)
            if "rng" in _init_params(layer_cls):
                kwargs["rng"] = rng
            if "dtype" in _init_params(layer_cls):
                kwargs["dtype"] = dtype
            try:
                layers.append(layer_cls(**kwargs))
            except TypeError as exc:
                raise ValueError(f"bad arguments for layer {kind}: {exc}") from None
        return cls(*layers)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """'<layer index>.<name>' -> array, for every parameter and buffer."""
        state = {}
        for i, layer in enumerate(self.layers):
            for p in layer.parameters():
                state[f"{i}.{p.name}"] = p.data
            for name, buf in layer.buffers().items():
                state[f"{i}.{name}"] = buf
        return state

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy arrays in place (views held by an optimizer stay valid); shapes must match."""
        own = self.state_arrays()
        missing = sorted(set(own) - set(arrays))
        extra = sorted(set(arrays) - set(own))
        if missing or extra:
            raise ValueError(f"model arrays do not match the architecture "
                             f"(missing {missing[:3]}, unexpected {extra[:3]})")
        for name, target in own.items():
            src = arrays[name]
            if src.shape != target.shape:
                raise ValueError(f"array {name} has shape {src.shape}, "
                                 f"the architecture needs {target.shape}")
            target[...] = src

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential(\n  {inner}\n)"


# Bounds on a description read from a file, checked before any layer is built: far above
# any barenet model, far below sizes that could not be allocated. The arrays a file holds
# must also match the shapes computed here exactly, so its own size bounds the total.
MAX_LAYERS = 1000
MAX_UNITS = 1 << 20                     # features or channels of one layer
MAX_WINDOW = 64                         # kernel side, stride, padding
_SIZES = ("n_in", "n_out", "in_channels", "out_channels", "num_features")
_WINDOWS = ("kernel_size", "stride", "padding")
_REALS = ("p", "alpha", "momentum", "eps")
_PASS_THROUGH = {"ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "SiLU", "Softmax", "Dropout",
                 "Dropout2d", "MaxPool2D", "AvgPool2D"}      # keep features and channels


def architecture_shapes(spec) -> dict[str, tuple[int, ...]]:
    """'<layer>.<name>' -> shape of every array a model of `spec` holds (as state_arrays
    names them), from the description alone: no layer built, nothing allocated.

    ValueError with a one-line reason when `spec` is not a list of known layers with
    whole, positive sizes within bounds, or when one layer's input cannot be the output of
    the layer before it (a Dense of 20 inputs after one of 10 outputs).
    """
    if not isinstance(spec, list) or not spec:
        raise ValueError("the architecture is not a non-empty list of layers")
    if len(spec) > MAX_LAYERS:
        raise ValueError(f"the architecture has {len(spec)} layers (at most {MAX_LAYERS})")
    shapes: dict[str, tuple[int, ...]] = {}
    features = channels = None          # what the previous layer gives, when known
    rank = None                         # 2: vectors (N, D), 4: feature maps (N, C, H, W)
    for i, entry in enumerate(spec):
        if not isinstance(entry, dict) or entry.get("type") not in LAYERS:
            kind = entry.get("type") if isinstance(entry, dict) else entry
            raise ValueError(f"layer {i}: unknown layer type {str(kind)[:40]!r}")
        kind, where = entry["type"], f"layer {i} ({entry['type']})"
        _check_values(entry, where)
        maps = LAYERS[kind].input_ndim == 4
        if maps and rank == 2:
            raise ValueError(f"{where}: needs feature maps, but the layer before gives vectors")
        if kind in ("Dense", "BatchNorm1d") and rank == 4:
            raise ValueError(f"{where}: needs vectors, but the layer before gives feature maps "
                             f"(a Flatten is missing)")
        if maps or kind in ("Dense", "BatchNorm1d", "Flatten"):
            rank = 2 if kind in ("Dense", "BatchNorm1d", "Flatten", "GlobalAvgPool2D") else 4
        if kind == "Dense":
            n_in, n_out = entry.get("n_in"), entry.get("n_out")
            _follows(features, n_in, where, "inputs")
            shapes[f"{i}.W"] = (n_in, n_out)
            if entry.get("bias", True):
                shapes[f"{i}.b"] = (n_out,)
            features, channels = n_out, None
        elif kind == "Conv2D":
            c_in, c_out = entry.get("in_channels"), entry.get("out_channels")
            _follows(channels, c_in, where, "input channels")
            kh, kw = _window(entry.get("kernel_size", 3))
            shapes[f"{i}.W"] = (c_out, c_in, kh, kw)
            if entry.get("bias", True):
                shapes[f"{i}.b"] = (c_out,)
            features, channels = None, c_out
        elif kind in ("BatchNorm1d", "BatchNorm2d"):
            n = entry.get("num_features")
            _follows(features if kind == "BatchNorm1d" else channels, n, where, "features")
            for name in ("gamma", "beta", "running_mean", "running_var"):
                shapes[f"{i}.{name}"] = (n,)
        elif kind == "GlobalAvgPool2D":
            features, channels = channels, None
        elif kind == "Flatten":             # of feature maps: features depend on the image
            features = features if channels is None else None
            channels = None
        elif kind not in _PASS_THROUGH:
            features = channels = None
    return shapes


def _check_values(entry: dict, where: str) -> None:
    for key, value in entry.items():
        if key in _SIZES and not (_is_int(value) and 1 <= value <= MAX_UNITS):
            raise ValueError(f"{where}: {key} must be a whole number from 1 to {MAX_UNITS}, "
                             f"got {str(value)[:40]}")
        if key in _WINDOWS:
            _window(value, where, key)
        if key in _REALS and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                  and math.isfinite(value)):
            raise ValueError(f"{where}: {key} must be a finite number, got {str(value)[:40]}")
        if key == "eps" and not value > 0:
            raise ValueError(f"{where}: eps must be positive, got {value}")
        if key == "bias" and not isinstance(value, bool):
            raise ValueError(f"{where}: bias must be true or false, got {str(value)[:40]}")
        if key == "init" and not isinstance(value, str):
            raise ValueError(f"{where}: init must be a name, got {str(value)[:40]}")
    missing = [k for k in _REQUIRED.get(entry["type"], ()) if k not in entry]
    if missing:
        raise ValueError(f"{where}: no {', '.join(missing)}")


_REQUIRED = {"Dense": ("n_in", "n_out"), "Conv2D": ("in_channels", "out_channels"),
             "BatchNorm1d": ("num_features",), "BatchNorm2d": ("num_features",)}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _window(value, where: str = "", key: str = "kernel_size") -> tuple[int, int]:
    """A kernel size, stride or padding: a whole number or a pair, each 0..MAX_WINDOW."""
    if value is None and key == "stride":                # pools: stride = kernel size
        return (1, 1)
    pair = value if isinstance(value, list) else [value, value]
    if len(pair) != 2 or not all(_is_int(v) and 0 <= v <= MAX_WINDOW for v in pair):
        raise ValueError(f"{where}: {key} must be a whole number or a pair from 0 to "
                         f"{MAX_WINDOW}, got {str(value)[:40]}")
    return pair[0], pair[1]


def _follows(given, wanted, where: str, what: str) -> None:
    if given is not None and given != wanted:
        raise ValueError(f"{where}: takes {wanted} {what} but the layer before gives {given}")


def _init_params(cls) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters)


def mlp(n_in: int, hidden: list[int], n_out: int, *, activation: str = "ReLU",
        init: str = "he", dropout: float = 0.0, batch_norm: bool = False,
        rng=None, dtype=np.float32) -> Sequential:
    """A multi-layer perceptron: [Dense, (BatchNorm1d), activation, (Dropout)] per hidden size."""
    rng = as_rng(rng)
    if activation not in LAYERS:
        raise ValueError(f"unknown activation {activation!r}")
    layers: list[Layer] = []
    sizes = [n_in, *hidden]
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers.append(Dense(a, b, init=init, rng=rng, dtype=dtype))
        if batch_norm:
            layers.append(BatchNorm1d(b, dtype=dtype))
        layers.append(LAYERS[activation]())
        if dropout:
            layers.append(Dropout(dropout, rng=rng))
    layers.append(Dense(sizes[-1], n_out, init=init, rng=rng, dtype=dtype))
    return Sequential(*layers)
