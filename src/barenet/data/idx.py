"""IDX files (the MNIST container format): parse them and build them, uint8 only.

Layout: 2 zero bytes, a type byte (0x08 = uint8), a byte giving the number of dimensions D,
then D big-endian uint32 sizes, then the values in C order.
"""

import math

import numpy as np

UINT8 = 0x08


def parse_idx(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Parse a uint8 IDX file held in memory, without copying.

    Returns an array of the file's shape, e.g. (N, 28, 28) for images, (N,) for labels; it
    shares memory with `data` (writable when `data` is). Raises ValueError naming the problem
    (bad magic, unsupported type, truncated, trailing bytes).
    """
    n = len(data)
    if n < 4:
        raise ValueError(f"truncated: {n} bytes, an IDX header needs at least 4")
    zero0, zero1, kind, ndim = bytes(data[:4])
    if zero0 or zero1 or ndim == 0:
        raise ValueError(f"bad magic 0x{bytes(data[:4]).hex()}, expected 0x000008NN (IDX uint8)")
    if kind != UINT8:
        raise ValueError(f"unsupported IDX element type 0x{kind:02x}, only uint8 (0x08) is read")
    header = 4 + 4 * ndim
    if n < header:
        raise ValueError(f"truncated: {n} bytes, the header of a {ndim}-D IDX file needs {header}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(shape)        # exact: int64 would wrap on huge dims
    if n < expected:
        raise ValueError(f"truncated: {n} bytes, shape {shape} needs {expected}")
    if n > expected:
        extra = n - expected
        raise ValueError(f"{extra} trailing byte{'' if extra == 1 else 's'} after shape "
                         f"{shape} ({expected} bytes)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def make_idx(values: np.ndarray) -> bytes:
    """The IDX bytes of a uint8 array: magic 0x000008<D>, D uint32 sizes, then the values."""
    values = np.ascontiguousarray(values)
    if values.dtype != np.uint8:
        raise ValueError(f"IDX writing supports uint8 only, got {values.dtype}")
    if not 1 <= values.ndim <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {values.ndim}")
    magic = bytes([0, 0, UINT8, values.ndim])
    return magic + np.asarray(values.shape, dtype=">u4").tobytes() + values.tobytes()
