"""Hypothesis fuzzing of image decoding and preprocessing: whatever comes in, the answer is a
uint8 (28, 28) digit (finite, 0-255: the float [0, 1] input scaled) or one ImageError line.
Nothing else: no other exception, no NaN, no warning."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageDraw

from barenet.data import preprocess
from barenet.data.preprocess import ImageError, load_image, preprocess_image


def load_digit(source):  # looked up at run time: each test fails on its own on older code
    return preprocess.load_digit(source)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_digit_or_image_error(produce):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning (overflow, NaN mean) is a bug here
        try:
            out = produce()
        except ImageError as exc:
            message = str(exc)
            assert message and "\n" not in message
            return None
    assert isinstance(out, np.ndarray) and out.shape == (28, 28) and out.dtype == np.uint8
    scaled = out / 255.0
    assert np.isfinite(scaled).all() and 0.0 <= scaled.min() and scaled.max() <= 1.0
    return out


DTYPES = st.sampled_from([np.uint8, np.uint16, np.int16, np.int32, np.int64, np.uint64,
                          np.float16, np.float32, np.float64, np.bool_])
SHAPES = st.one_of(
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=60),
    st.tuples(st.integers(0, 40), st.integers(0, 40), st.sampled_from([1, 2, 3, 4, 5])),
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
)


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(DTYPES))
    shape = draw(SHAPES)
    if dtype.kind == "f":
        elements = st.floats(allow_nan=True, allow_infinity=True, width=dtype.itemsize * 8)
    else:
        elements = None  # every value of the dtype, extremes included
    return draw(hnp.arrays(dtype, shape, elements=elements))


@FUZZ
@given(arrays())
def test_preprocess_any_array(a):
    check_digit_or_image_error(lambda: preprocess_image(a))


@FUZZ
@given(st.integers(8, 120), st.integers(8, 120), st.floats(-1e38, 1e38), st.floats(-1e38, 1e38),
       st.sampled_from([np.float32, np.float64, np.int64, np.uint64]))
def test_preprocess_a_drawn_stroke_at_any_scale(h, w, paper, ink, dtype):
    assume(paper != ink)
    a = np.full((h, w), paper, dtype=np.float64)
    a[h // 4 : 3 * h // 4, w // 2 - 1 : w // 2 + 2] = ink
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        a = np.clip(a, info.min, info.max)
    with np.errstate(over="ignore", invalid="ignore"):
        a = a.astype(dtype)
    check_digit_or_image_error(lambda: preprocess_image(a))


def _encoded(fmt: str, mode: str) -> bytes:
    im = Image.new(mode, (40, 40), 0 if mode in ("1", "I", "F") else "white")
    ImageDraw.Draw(im).line([(20, 5), (20, 35)], fill=255 if mode in ("1", "I", "F") else 0,
                            width=4)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


SEEDS = [_encoded(f, m) for f, m in [("PNG", "L"), ("PNG", "RGBA"), ("PNG", "I;16"),
                                     ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "1"),
                                     ("TIFF", "F"), ("TIFF", "I"), ("WEBP", "RGBA")]]


@st.composite
def corrupted(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "zero-run"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[at : at + 8] = bytes(8)
    return bytes(data)


@FUZZ
@given(corrupted())
def test_corrupted_image_bytes(data):
    for load in (load_image, load_digit):
        check_digit_or_image_error(lambda load=load: preprocess_image(load(data)))


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    check_digit_or_image_error(lambda: preprocess_image(load_digit(data)))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e38, -1e38, 3.4e38],
                         ids=["nan", "inf", "-inf", "1e38", "-1e38", "max-float32"])
def test_float_tiff_extremes(value):
    a = np.zeros((32, 32), dtype=np.float32)
    a[8:24, 14:18] = value
    buf = io.BytesIO()
    Image.fromarray(a, mode="F").save(buf, format="TIFF")
    for load in (load_image, load_digit):
        check_digit_or_image_error(lambda load=load: preprocess_image(load(buf.getvalue())))
