"""ONNX export: a barenet Sequential or Ensemble as an ONNX graph, inference only.

The graph is built node by node from each layer's own arrays with the `onnx` package's
helpers; nothing here computes. `onnx` is an optional extra (`barenet[onnx]`), imported inside
to_onnx, so `import barenet` never loads it. Layers map one to one where ONNX has the op
(Gemm, Conv, MaxPool, BatchNormalization, ...); GELU (tanh form) and SiLU become the same
elementwise formulas barenet computes; Dropout is the identity at inference and emits nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .ensemble import IDENTITY, Ensemble
from .model import PIXEL_SCALE, Sequential
from .modelfile import atomic_write_bytes

OPSET = 17               # onnxruntime >= 1.14 and every current converter's default
INPUT = "input"
OUTPUTS = ("label", "probabilities")    # skl2onnx's names and order for classifiers


class ExportError(ValueError):
    """A model this exporter cannot express; str() is one line for the user."""


class _Graph:
    """Nodes and constants under unique names; each add_* returns its output's name."""

    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers = [], []
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, stem: str, value, dtype=np.float32) -> str:
        name = self.name(stem)
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], stem: str | None = None, **attrs) -> str:
        out = self.name(stem or op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def to_onnx(model, *, input_type: str = "uint8", input_shape: str | None = None,
            image_side: int = 28, classes=None, metadata: dict | None = None):
    """An onnx.ModelProto computing `model`'s predict and predict_proba.

    input: "input", uint8 pixels scaled by 1/255 in the graph as barenet's as_input does, or
        with input_type="float32" float values used as they are (a NetClassifier trained on
        tabular data). input_shape: "images", (N, side, side), the default for uint8; or
        "rows", (N, side*side) pixels or (N, features), the default for float32.
    outputs: "label" (N,) int64 class index, or classes[index] when `classes` is given
        (ints or strings); "probabilities" (N, K) float32.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if input_type not in ("uint8", "float32"):
        raise ExportError(f"input_type must be uint8 or float32, got {input_type!r}")
    input_shape = input_shape or ("images" if input_type == "uint8" else "rows")
    if input_shape not in ("images", "rows"):
        raise ExportError(f"input_shape must be images or rows, got {input_shape!r}")
    dims = _input_dims(model, input_shape, image_side)
    probe = np.zeros((1, *dims), dtype=np.uint8 if input_type == "uint8" else np.float32)
    n_classes = model.predict_proba(probe).shape[1]
    g = _Graph(helper, numpy_helper)
    x = INPUT
    if input_type == "uint8":
        x = g.op("Mul", [g.op("Cast", [x], to=TensorProto.FLOAT),
                         g.const("pixel_scale", PIXEL_SCALE)], "scaled")
    if isinstance(model, Ensemble):
        probs = _ensemble(g, model, x, image_side)
        label = g.op("ArgMax", [probs], "index", axis=1, keepdims=0)
    elif isinstance(model, Sequential):
        logits = _sequential(g, model, x, image_side)
        probs = g.op("Softmax", [logits], "probs", axis=-1)
        # predict is the argmax of the logits, as in Sequential.predict
        label = g.op("ArgMax", [logits], "index", axis=1, keepdims=0)
    else:
        raise ExportError(f"cannot export a {type(model).__name__}: expected a Sequential "
                          f"or an Ensemble")
    label_type = TensorProto.INT64
    if classes is not None:
        classes = np.asarray(classes)
        table = (classes.astype(object) if classes.dtype.kind in "USO"
                 else classes.astype(np.int64))
        label_type = TensorProto.STRING if table.dtype == object else TensorProto.INT64
        label = g.op("Gather", [g.const("classes", table, table.dtype), label], "class", axis=0)
    g.nodes.append(helper.make_node("Identity", [label], [OUTPUTS[0]], name=OUTPUTS[0]))
    g.nodes.append(helper.make_node("Identity", [probs], [OUTPUTS[1]], name=OUTPUTS[1]))

    elem = TensorProto.UINT8 if input_type == "uint8" else TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(INPUT, elem, ["N", *dims])]
    outputs = [helper.make_tensor_value_info(OUTPUTS[0], label_type, ["N"]),
               helper.make_tensor_value_info(OUTPUTS[1], TensorProto.FLOAT, ["N", n_classes])]
    graph = helper.make_graph(g.nodes, "barenet", inputs, outputs, g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="barenet", producer_version=_version())
    proto.ir_version = min(proto.ir_version, 8)     # what opset 17 runtimes read
    _describe(proto, model, input_type, dims, n_classes, metadata or {})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _describe(proto, model, input_type: str, dims: list[int], n_classes: int,
              metadata: dict) -> None:
    """The doc string and metadata properties: input, preprocessing, outputs, and `metadata`."""
    from onnx import helper

    preprocessing = ("uint8 pixels x / 255 inside the graph" if input_type == "uint8"
                     else "none: float input used as given")
    shape = ", ".join(["N", *map(str, dims)])
    proto.doc_string = (f"barenet {model!r}; input: {input_type} ({shape}); preprocessing: "
                        f"{preprocessing}; outputs: label (N,), probabilities (N, {n_classes})")
    props = {"preprocessing": preprocessing, "input": f"{input_type} ({shape})",
             "outputs": f"label (N,), probabilities (N, {n_classes})", **metadata}
    helper.set_model_props(proto, {k: str(v) for k, v in props.items()})


def save_onnx(model, path, **kwargs) -> None:
    """Write to_onnx(model, **kwargs) to `path` atomically (temp file, fsync, rename)."""
    atomic_write_bytes(Path(path), to_onnx(model, **kwargs).SerializeToString())


def _version() -> str:
    from . import __version__
    return __version__


def _input_dims(model, input_shape: str, side: int) -> list[int]:
    """The input's dimensions after N: [side, side] images, or rows of the first layer's
    width (side * side pixels for a conv network or a float model without a Dense first)."""
    if input_shape == "images":
        return [side, side]
    first = (model.members[0] if isinstance(model, Ensemble) else model).layers[0]
    if hasattr(first, "n_in") and not (isinstance(model, Ensemble)
                                       and model.views != [IDENTITY]):
        return [int(first.n_in)]
    return [side * side]


def _adapt(g: _Graph, model: Sequential, x: str, image_side: int) -> str:
    """Sequential._adapt: rows for a row-wise first layer, (N, 1, H, W) for a conv."""
    if model.layers and model.layers[0].input_ndim == 4:
        return g.op("Reshape", [x, g.const("image_shape", [-1, 1, image_side, image_side],
                                           np.int64)], "images")
    return g.op("Reshape", [x, g.const("row_shape", [0, -1], np.int64)], "rows")


def _sequential(g: _Graph, model: Sequential, x: str, image_side: int) -> str:
    """The logits of `model` (eval mode) for the scaled input `x`."""
    if not model.layers:
        raise ExportError("cannot export an empty model")
    x = _adapt(g, model, x, image_side)
    for layer in model.layers:
        kind = type(layer).__name__
        emit = _LAYERS.get(kind)
        if emit is None:
            raise ExportError(f"no ONNX export for layer {kind} yet")
        x = emit(g, layer, x)
    return x


def _ensemble(g: _Graph, ensemble: Ensemble, x: str, image_side: int) -> str:
    """Weighted mean of the members' probabilities over the views (Ensemble.predict_proba)."""
    images = x
    if ensemble.views != [IDENTITY]:
        images = g.op("Reshape", [x, g.const("view_shape", [-1, image_side, image_side],
                                             np.int64)], "view_images")
    terms = []
    for view in ensemble.views:
        seen = _view(g, images, view, image_side)
        for weight, member in zip(ensemble.weights, ensemble.members):
            probs = g.op("Softmax", [_sequential(g, member, seen, image_side)], "member_probs",
                         axis=-1)
            scale = g.const("member_weight", weight / len(ensemble.views))
            terms.append(g.op("Mul", [probs, scale], "weighted"))
    return terms[0] if len(terms) == 1 else g.op("Sum", terms, "ensemble_probs")


def _view(g: _Graph, images: str, view: str, side: int) -> str:
    """ensemble.apply_view on (N, H, W) images: 'flip', 'shift:DY,DX', or steps joined by '+'."""
    if view == IDENTITY:
        return images
    for step in view.split("+"):
        if step == "flip":                   # reverse the last axis
            images = g.op("Slice", [images, g.const("start", [-1], np.int64),
                                    g.const("end", [-(2 ** 62)], np.int64),
                                    g.const("axis", [2], np.int64),
                                    g.const("step", [-1], np.int64)], "flipped")
            continue
        dy, dx = (int(v) for v in step.split(":")[1].split(","))
        # out[r, c] = in[r - dy, c - dx], zeros shifted in: pad, then cut the window.
        pads = [0, max(dy, 0), max(dx, 0), 0, max(-dy, 0), max(-dx, 0)]
        padded = g.op("Pad", [images, g.const("pads", pads, np.int64)], "padded")
        start = [max(-dy, 0), max(-dx, 0)]
        images = g.op("Slice", [padded, g.const("start", start, np.int64),
                                g.const("end", [s + side for s in start], np.int64),
                                g.const("axes", [1, 2], np.int64)], "shifted")
    return images


# One emitter per layer type: (graph, layer, input name) -> output name.

def _dense(g, layer, x):
    inputs = [x, g.const("W", layer.W.data)]
    if layer.b is not None:
        inputs.append(g.const("b", layer.b.data))
    return g.op("Gemm", inputs, "dense")


def _gelu(g, layer, x):
    # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), barenet's GELU (tanh form)
    cube = g.op("Mul", [g.op("Mul", [x, x]), x])
    inner = g.op("Add", [x, g.op("Mul", [cube, g.const("c", 0.044715)])])
    t = g.op("Tanh", [g.op("Mul", [inner, g.const("sqrt_2_over_pi", math.sqrt(2 / math.pi))])])
    half_x = g.op("Mul", [x, g.const("half", 0.5)])
    return g.op("Mul", [half_x, g.op("Add", [t, g.const("one", 1.0)])], "gelu")


def _batch_norm(g, layer, x):
    return g.op("BatchNormalization",
                [x, g.const("gamma", layer.gamma.data), g.const("beta", layer.beta.data),
                 g.const("running_mean", layer.running_mean),
                 g.const("running_var", layer.running_var)], "batch_norm", epsilon=layer.eps)


def _conv(g, layer, x):
    (ph, pw) = layer.padding
    inputs = [x, g.const("W", layer.W.data)]        # (C_out, C_in, kh, kw) in both
    if layer.b is not None:
        inputs.append(g.const("b", layer.b.data))
    return g.op("Conv", inputs, "conv", kernel_shape=list(layer.kernel_size),
                strides=list(layer.stride), pads=[ph, pw, ph, pw])


def _pool(op_type, **extra):
    def emit(g, layer, x):
        (ph, pw) = layer.padding
        return g.op(op_type, [x], op_type.lower(), kernel_shape=list(layer.kernel_size),
                    strides=list(layer.stride), pads=[ph, pw, ph, pw], **extra)
    return emit


def _global_avg_pool(g, layer, x):
    return g.op("Flatten", [g.op("GlobalAveragePool", [x])], "global_avg", axis=1)


def _identity(g, layer, x):
    return x                                   # dropout does nothing at inference


_LAYERS = {
    "Dense": _dense,
    "ReLU": lambda g, layer, x: g.op("Relu", [x]),
    "LeakyReLU": lambda g, layer, x: g.op("LeakyRelu", [x], alpha=layer.alpha),
    "Sigmoid": lambda g, layer, x: g.op("Sigmoid", [x]),
    "Tanh": lambda g, layer, x: g.op("Tanh", [x]),
    "GELU": _gelu,
    "SiLU": lambda g, layer, x: g.op("Mul", [x, g.op("Sigmoid", [x])], "silu"),
    "Softmax": lambda g, layer, x: g.op("Softmax", [x], axis=-1),
    "Dropout": _identity,
    "Dropout2d": _identity,
    "BatchNorm1d": _batch_norm,
    "BatchNorm2d": _batch_norm,
    "Flatten": lambda g, layer, x: g.op("Flatten", [x], axis=1),
    "Conv2D": _conv,
    "MaxPool2D": _pool("MaxPool"),
    "AvgPool2D": _pool("AveragePool", count_include_pad=1),
    "GlobalAvgPool2D": _global_avg_pool,
}
