"""What a network described by a config needs, worked out without building it.

Layer tables are checked argument by argument, one image's shape is followed through the
stack, and parameter and activation bytes are counted, so config validation can refuse a
network that cannot run or cannot fit before anything is allocated (the way Pillow refuses a
decompression bomb before decoding it). Standard library only: nothing here touches NumPy.
"""

from __future__ import annotations

import math
import os

FLOAT_BYTES = 4                     # float32 parameters and activations
IMAGE_SHAPE = (1, 28, 28)           # both data sets: 28x28 grey images, 10 classes
N_CLASSES = 10
TRAIN_IMAGES = 60_000
EVAL_BATCH_ROWS, EVAL_BATCH_MAPS = 10_000, 1_000   # Sequential.logits' batch sizes
LAYER_INT_MAX = 2**31 - 1           # no real layer comes near; keeps the arithmetic exact
UNKNOWN_LIMIT = 256 << 30           # bytes assumed available where the system does not say


class LayerSpecError(ValueError):
    """A layer table that cannot build or cannot run; str() is one line."""


def _int(value, what: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (
            low <= value <= LAYER_INT_MAX):
        raise LayerSpecError(f"{what} must be a whole number from {low} to {LAYER_INT_MAX}, "
                             f"got {short(value)}")
    return value


def _pair(value, what: str, low: int = 1) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise LayerSpecError(f"{what} must be a whole number or a pair of them, "
                                 f"got {short(value)}")
        return _int(value[0], what, low), _int(value[1], what, low)
    return (_int(value, what, low),) * 2


def _float(value, what: str, low: float, high: float, *, closed_low: bool = True,
           closed_high: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        try:
            value = float(value)
        except OverflowError:
            ok = False
    if ok and math.isfinite(value):
        ok = ((value >= low if closed_low else value > low)
              and (value <= high if closed_high else value < high))
    else:
        ok = False
    if not ok:
        span = f"{'[' if closed_low else '('}{low:g}, {high:g}{']' if closed_high else ')'}"
        raise LayerSpecError(f"{what} must be a number in {span}, got {short(value)}")
    return value


def _init(value, what: str) -> str:
    from .init import INITIALIZERS  # a dict of names; init.py imports NumPy only
    if not isinstance(value, str) or value not in INITIALIZERS:
        raise LayerSpecError(f"{what} must be one of {', '.join(sorted(INITIALIZERS))}, "
                             f"got {short(value)}")
    return value


def _bool(value, what: str) -> bool:
    if not isinstance(value, bool):
        raise LayerSpecError(f"{what} must be true or false, got {short(value)}")
    return value


_POOL = {"kernel_size": _pair, "stride": _pair, "padding": lambda v, w: _pair(v, w, 0)}
_NORM = {"num_features": _int,
         "momentum": lambda v, w: _float(v, w, 0.0, 1.0),
         "eps": lambda v, w: _float(v, w, 0.0, 1.0, closed_low=False)}
_DROP = {"p": lambda v, w: _float(v, w, 0.0, 1.0, closed_high=False)}
# type -> (required keys, {key: checker}); the keys the layer's constructor takes from a config.
SCHEMA: dict[str, tuple[tuple[str, ...], dict]] = {
    "Dense": (("n_in", "n_out"), {"n_in": _int, "n_out": _int, "init": _init,
                                  "bias": _bool}),
    "Conv2D": (("in_channels", "out_channels"),
               {"in_channels": _int, "out_channels": _int, "kernel_size": _pair,
                "stride": _pair, "padding": lambda v, w: _pair(v, w, 0), "init": _init,
                "bias": _bool}),
    "MaxPool2D": ((), _POOL), "AvgPool2D": ((), _POOL),
    "BatchNorm1d": (("num_features",), _NORM), "BatchNorm2d": (("num_features",), _NORM),
    "Dropout": ((), _DROP), "Dropout2d": ((), _DROP),
    "LeakyReLU": ((), {"alpha": lambda v, w: _float(v, w, -1e6, 1e6)}),
    **{name: ((), {}) for name in ("ReLU", "Sigmoid", "Tanh", "GELU", "SiLU", "Softmax",
                                   "Flatten", "GlobalAvgPool2D")},
}
_MAP_LAYERS = {"Conv2D", "MaxPool2D", "AvgPool2D", "BatchNorm2d", "Dropout2d",
               "GlobalAvgPool2D"}          # want (C, H, W) input: Sequential adds the channel


def check_layer(index: int, table: dict) -> dict:
    """The checked arguments of one layer table (raises LayerSpecError naming the key)."""
    kind = table.get("type")
    where = f"layer {index} ({kind})"
    if kind not in SCHEMA:
        raise LayerSpecError(f"layer {index}: unknown type {short(kind)}; known: "
                             f"{', '.join(SCHEMA)}")
    required, checkers = SCHEMA[kind]
    args = {}
    for key, value in table.items():
        if key == "type":
            continue
        if key not in checkers:
            known = ", ".join(checkers) or "none"
            raise LayerSpecError(f"{where}: unknown key {short(key)} (its keys: {known})")
        if key == "stride" and value is None:
            continue
        args[key] = checkers[key](value, f"{where} {key}")
    missing = [k for k in required if k not in args]
    if missing:
        raise LayerSpecError(f"{where}: missing {', '.join(missing)}")
    return args


def _out(size: int, kernel: int, stride: int, padding: int, where: str) -> int:
    out = (size + 2 * padding - kernel) // stride + 1
    if out <= 0:
        raise LayerSpecError(f"{where}: kernel {kernel} with padding {padding} does not fit "
                             f"its input of size {size}")
    return out


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def walk(layers: list[dict]) -> dict:
    """Follow one image through `layers`: parameter and per-image activation counts.

    Raises LayerSpecError where a layer's arguments are wrong or it does not fit the shape of
    what reaches it (a Dense whose n_in is not the previous layer's width, a convolution
    after a Flatten, an output that is not N_CLASSES wide).
    """
    if not isinstance(layers, (list, tuple)) or not layers:
        raise LayerSpecError("expected a non-empty list of layer tables")
    first = layers[0].get("type") if isinstance(layers[0], dict) else None
    c, h, w = IMAGE_SHAPE
    shape: tuple[int, ...] = (c, h, w) if first in _MAP_LAYERS else (c * h * w,)
    net = {"params": 0, "buffers": 0, "per_image": 0, "scratch": 0}
    for i, table in enumerate(layers):
        if not isinstance(table, dict):
            raise LayerSpecError(f"layer {i}: expected a table with a type, got {short(table)}")
        args = check_layer(i, table)
        shape = _step(table["type"], args, shape, f"layer {i} ({table['type']})", net)
        net["per_image"] += math.prod(shape)                    # every layer's output
    if shape != (N_CLASSES,):
        raise LayerSpecError(f"the last layer gives {_shape_text(shape)} outputs per image; "
                             f"the data set has {N_CLASSES} classes (end with a Dense of "
                             f"n_out = {N_CLASSES})")
    net["maps"] = any(isinstance(t, dict) and t.get("type") in _MAP_LAYERS for t in layers)
    return net


def _step(kind: str, args: dict, shape: tuple[int, ...], where: str, net: dict):
    """The shape one layer makes of `shape`, adding its parameters and scratch to `net`."""
    is_map = len(shape) == 3
    if kind in _MAP_LAYERS and not is_map:
        raise LayerSpecError(f"{where} needs a feature map (C, H, W) but gets "
                             f"{_shape_text(shape)} features")
    if kind == "Dense":
        if is_map:
            raise LayerSpecError(f"{where} gets a feature map {_shape_text(shape)}; put a "
                                 f"Flatten before it (n_in = {math.prod(shape)})")
        if args["n_in"] != shape[0]:
            raise LayerSpecError(f"{where}: n_in = {args['n_in']} but its input has "
                                 f"{shape[0]} features")
        net["params"] += args["n_in"] * args["n_out"] + (args["n_out"] if args.get("bias", True)
                                                         else 0)
        return (args["n_out"],)
    if kind == "Conv2D":
        if args["in_channels"] != shape[0]:
            raise LayerSpecError(f"{where}: in_channels = {args['in_channels']} but its "
                                 f"input has {shape[0]} channels")
        (kh, kw), (sh, sw) = args.get("kernel_size", (3, 3)), args.get("stride", (1, 1))
        ph, pw = args.get("padding", (0, 0))
        ho, wo = _out(shape[1], kh, sh, ph, where), _out(shape[2], kw, sw, pw, where)
        cout = args["out_channels"]
        net["params"] += cout * shape[0] * kh * kw + (cout if args.get("bias", True) else 0)
        net["scratch"] += ho * wo * (kh * kw * shape[0] + 1)   # im2col columns per image
        return (cout, ho, wo)
    if kind in ("MaxPool2D", "AvgPool2D"):
        k = args.get("kernel_size", (2, 2))
        s, p = args.get("stride", k), args.get("padding", (0, 0))
        if p[0] > k[0] // 2 or p[1] > k[1] // 2:
            raise LayerSpecError(f"{where}: padding must be at most half the kernel size")
        return (shape[0], _out(shape[1], k[0], s[0], p[0], where),
                _out(shape[2], k[1], s[1], p[1], where))
    if kind in ("BatchNorm1d", "BatchNorm2d"):
        if (kind == "BatchNorm1d") == is_map or args["num_features"] != shape[0]:
            raise LayerSpecError(f"{where}: num_features = {args['num_features']} does not "
                                 f"fit its input {_shape_text(shape)}")
        net["params"] += 2 * shape[0]
        net["buffers"] += 2 * shape[0]
        net["per_image"] += math.prod(shape)                    # the normalized copy
        return shape
    if kind == "GlobalAvgPool2D":
        return (shape[0],)
    if kind == "Flatten":
        return (math.prod(shape),)
    return shape


def mlp_layers(hidden, batch_norm: bool, dropout: float) -> list[dict]:
    """The layer tables of model.mlp (activations stand for any element-wise layer)."""
    sizes = [math.prod(IMAGE_SHAPE), *hidden]
    layers: list[dict] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers.append({"type": "Dense", "n_in": a, "n_out": b})
        if batch_norm:
            layers.append({"type": "BatchNorm1d", "num_features": b})
        layers.append({"type": "ReLU"})
        if dropout:
            layers.append({"type": "Dropout", "p": dropout})
    layers.append({"type": "Dense", "n_in": sizes[-1], "n_out": N_CLASSES})
    return layers


def training_bytes(net: dict, batch: int, optimizer_slots: int) -> tuple[int, int, str]:
    """(parameter bytes, activation bytes, which batch): a lower bound on what training
    holds at once.

    Parameters: weights + gradients + `optimizer_slots` state arrays each. Activations:
    every layer's output for one training batch (backward needs them), or for one
    evaluation batch when that is larger, plus the im2col columns of convolutions.
    """
    param_bytes = FLOAT_BYTES * (net["params"] * (2 + optimizer_slots) + net["buffers"])
    train = batch * (net["per_image"] + net["scratch"])
    eval_batch = EVAL_BATCH_MAPS if net["maps"] else EVAL_BATCH_ROWS
    evaluation = eval_batch * net["per_image"]
    if train >= evaluation:
        return param_bytes, FLOAT_BYTES * train, f"a training batch of {batch}"
    return param_bytes, FLOAT_BYTES * evaluation, f"an evaluation batch of {eval_batch}"


def check_fits(layers: list[dict], batch: int, optimizer_slots: int) -> dict:
    """walk(layers), refusing (LayerSpecError) a network whose training needs more memory
    than this machine has (parameters, gradients, optimizer state, one batch's activations)."""
    net = walk(layers)
    param_bytes, act_bytes, which = training_bytes(net, batch, optimizer_slots)
    limit, source = available_memory()
    if param_bytes + act_bytes > limit:
        raise LayerSpecError(
            f"this network needs at least {human_bytes(param_bytes + act_bytes)} to train "
            f"({net['params']:,} parameters with gradients and optimizer state: "
            f"{human_bytes(param_bytes)}; activations of {which}: {human_bytes(act_bytes)}), "
            f"more than the {human_bytes(limit)} available ({source}); use smaller layers "
            f"or a smaller training.batch_size")
    return net


def available_memory() -> tuple[int, str]:
    """(bytes this process may still allocate, where that figure comes from)."""
    found: list[tuple[int, str]] = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append((int(line.split()[1]) * 1024, "MemAvailable"))
    except (OSError, ValueError, IndexError):
        try:
            pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            if pages > 0:
                found.append((pages, "free physical memory"))
        except (AttributeError, ValueError, OSError):
            pass
    try:                                                 # a container's own limit
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            text = f.read().strip()
        if text != "max":
            with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
                used = int(f.read().strip())
            found.append((max(int(text) - used, 0), "the cgroup memory limit"))
    except (OSError, ValueError):
        pass
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            found.append((soft, "the address-space limit (ulimit -v)"))
    except (ImportError, OSError, ValueError):
        pass
    return min(found) if found else (UNKNOWN_LIMIT, "a fixed bound (the system does not say)")


def human_bytes(n: int | float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB", "EB"):
        if n < 1000 or unit == "EB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} EB"  # pragma: no cover


def cut(text: str, limit: int = 120) -> str:
    """One line of at most `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def short(value, limit: int = 60) -> str:
    """repr() of a value from a user's file, cut short, and safe on anything a parser makes
    (nested thousands deep, integers of thousands of digits)."""
    import reprlib
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxstring, r.maxother = 3, 6, 6, 4, 40, 40
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    try:
        text = r.repr(value)
    except (RecursionError, ValueError):
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit else text[:limit - 3] + "..."
