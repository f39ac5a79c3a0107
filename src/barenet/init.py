"""Weight initializers, chosen by name: Xavier/Glorot, He/Kaiming, LeCun, zeros.

Each takes (shape, rng, dtype) for a weight of shape (fan_in, fan_out) or
(C_out, C_in, kH, kW) and returns a fresh array. No I/O, NumPy only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Initializer = Callable[[tuple[int, ...], np.random.Generator, np.dtype], np.ndarray]


def as_rng(rng: None | int | np.random.Generator) -> np.random.Generator:
    """None -> fresh entropy, int -> seeded, Generator -> itself."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) for a Dense (in, out) or conv (C_out, C_in, kH, kW) weight."""
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _uniform(limit: float):
    def init(shape, rng, dtype):
        return rng.uniform(-limit, limit, size=shape).astype(dtype)
    return init


def _normal(std: float):
    def init(shape, rng, dtype):
        return (rng.standard_normal(size=shape) * std).astype(dtype)
    return init


def xavier_uniform(shape, rng, dtype=np.float32):
    fan_in, fan_out = fans(shape)
    return _uniform(math.sqrt(6.0 / (fan_in + fan_out)))(shape, rng, dtype)


def xavier_normal(shape, rng, dtype=np.float32):
    fan_in, fan_out = fans(shape)
    return _normal(math.sqrt(2.0 / (fan_in + fan_out)))(shape, rng, dtype)


def he_uniform(shape, rng, dtype=np.float32):
    fan_in, _ = fans(shape)
    return _uniform(math.sqrt(6.0 / fan_in))(shape, rng, dtype)


def he_normal(shape, rng, dtype=np.float32):
    fan_in, _ = fans(shape)
    return _normal(math.sqrt(2.0 / fan_in))(shape, rng, dtype)


def lecun_uniform(shape, rng, dtype=np.float32):
    fan_in, _ = fans(shape)
    return _uniform(math.sqrt(3.0 / fan_in))(shape, rng, dtype)


def lecun_normal(shape, rng, dtype=np.float32):
    fan_in, _ = fans(shape)
    return _normal(math.sqrt(1.0 / fan_in))(shape, rng, dtype)


def zeros(shape, rng, dtype=np.float32):
    return np.zeros(shape, dtype=dtype)


INITIALIZERS: dict[str, Initializer] = {
    "xavier": xavier_uniform,
    "xavier_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "glorot": xavier_uniform,
    "glorot_uniform": xavier_uniform,
    "glorot_normal": xavier_normal,
    "he": he_normal,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "kaiming": he_normal,
    "kaiming_normal": he_normal,
    "kaiming_uniform": he_uniform,
    "lecun": lecun_normal,
    "lecun_normal": lecun_normal,
    "lecun_uniform": lecun_uniform,
    "zeros": zeros,
}


def initializer(name: str) -> Initializer:
    try:
        return INITIALIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown initializer {name!r}; choose one of {', '.join(sorted(INITIALIZERS))}"
        ) from None
