"""Window geometry shared by convolution and pooling on feature maps (N, C, H, W).

Output sizes, the NHWC <-> NCHW views the layers compute in, and the strided slices that pick
element (i, j) of every window. No layers here; NumPy only.
"""

from __future__ import annotations

import numpy as np


def pair(v) -> tuple[int, int]:
    """3 -> (3, 3); a pair stays a pair (kernel sizes, strides, paddings)."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"expected an int or a pair, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def plain(v: tuple[int, int]):
    """(3, 3) -> 3 for configs; (3, 5) stays a list."""
    return v[0] if v[0] == v[1] else list(v)


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    out = (size + 2 * padding - kernel) // stride + 1
    if out <= 0:
        raise ValueError(f"kernel {kernel} with padding {padding} does not fit input size {size}")
    return out


def nhwc(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W, C) view; contiguous when x came from a layer here."""
    return x.transpose(0, 2, 3, 1)


def nchw(a: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> (N, C, H, W) view, no copy."""
    return a.transpose(0, 3, 1, 2)


def offset_slices(kernel: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int]):
    """For each kernel offset (i, j): the (H, W) slices of every window's element (i, j)."""
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    for i in range(kh):
        for j in range(kw):
            yield (slice(i, i + sh * (ho - 1) + 1, sh), slice(j, j + sw * (wo - 1) + 1, sw))
