"""A user's drawing or photo turned into a digit the way MNIST made its digits.

MNIST: white ink on black, size-normalized into a 20x20 box (aspect kept, anti-aliased), centered
by center of mass in 28x28, uint8. Decoding files and arrays to gray is in decode.py (Pillow);
the numerics here are NumPy. No MNIST I/O here.
"""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image

from .decode import MAX_PIXELS, ImageError, as_gray, load_image

__all__ = ["DIGIT_MAX_PIXELS", "MAX_PIXELS", "ImageError", "load_digit", "load_image",
           "preprocess_image"]

# A digit needs far fewer pixels than MAX_PIXELS: load_digit (the server) refuses above this,
# as Pillow's bomb guard does above 179 MP; 16 MP is a 4608x3456 phone photo.
DIGIT_MAX_PIXELS = 16_000_000
_WORK_SIDE = 640  # larger arrays are box-averaged below this first: the digit ends up 20 px
_BOX, _SIDE = 20, 28  # digit fits a 20x20 box, centered by mass in 28x28
_STRONG = 0.25  # of the ink level: surely ink; the digit is what lies on or next to such pixels
_FAINT = 0.02  # of the ink level: below this, even next to a stroke, a pixel is background
_SPECK = 0.02  # a detached end of the ink with less of its mass than this is a speck, not digit
_MIN_CONTRAST = 0.05  # of full scale: less between ink and background means the image is blank


def _blank() -> ImageError:
    return ImageError("no digit found: the image is blank (nothing stands out from the background)")


def load_digit(source: str | os.PathLike | bytes) -> np.ndarray:
    """load_image for preprocess_image, as the server and `barenet predict` use it: at most
    DIGIT_MAX_PIXELS, decoded at the resolution preprocessing works at. Same digit, bounded cost
    (a 16-bit RGBA bomb of 40 MP took 1.7 GB and 5 s through load_image at full size)."""
    return load_image(source, max_pixels=DIGIT_MAX_PIXELS, work_side=_WORK_SIDE)


# The MNIST treatment


def preprocess_image(image: np.ndarray) -> np.ndarray:
    """Any digit picture -> uint8 (28, 28), white ink on black, as MNIST digits were made.

    image: (H, W) gray, or (H, W, 3) RGB, or (H, W, 4) RGBA; uint8, or float in [0, 1].
    Steps: grayscale; subtract a smooth background fitted to the image border (uneven light);
    ink is whichever side of it deviates most (dark on light or light on dark); faint noise and
    detached specks dropped; crop to the ink; resize into 20x20 keeping aspect (anti-aliased);
    place in 28x28 with the center of mass at (14, 14), rounded to whole pixels.
    Raises ImageError when no ink stands out (blank image).
    """
    gray = as_gray(image, side=_WORK_SIDE)  # (H, W) float32
    if gray.size == 0:
        raise _blank()
    ink = gray - _fit_background(gray)  # background ~0, ink clearly positive or negative
    if not _ink_is_light(ink, _border_noise(ink)):
        np.negative(ink, out=ink)
    digit = _isolate(ink)
    return _center(_fit_box(digit))


def _border(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of a band about 3% wide around the image, at most ~8k pixels."""
    h, w = a.shape
    band = max(1, round(0.03 * min(h, w)))
    if 2 * band >= min(h, w):  # tiny image: all of it is border
        return np.nonzero(np.ones((h, w), dtype=bool))
    step = max(1, 4 * band * (h + w) // 8192)
    ends_v, ends_h = np.r_[0:band, h - band : h], np.r_[0:band, w - band : w]
    r1, c1 = np.meshgrid(ends_v, np.arange(0, w, step), indexing="ij")  # top and bottom
    r2, c2 = np.meshgrid(np.arange(band, h - band, step), ends_h, indexing="ij")  # sides
    return np.r_[r1.ravel(), r2.ravel()], np.r_[c1.ravel(), c2.ravel()]


def _border_noise(a: np.ndarray, *, ink_positive: bool = False) -> float:
    """Standard deviation of the background, read robustly off the image border.

    Ink touching the border must not count as noise. Without knowing its sign: 1.4826 * MAD.
    With ink known to be positive, from the lower part of the distribution only: for Gaussian
    noise, q30 - q10 = 0.757 sigma, and ink covering up to half the border leaves it intact.
    """
    values = a[_border(a)]
    if ink_positive:
        q10, q30 = np.quantile(values, [0.1, 0.3])
        return float(q30 - q10) / 0.757
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def _fit_background(gray: np.ndarray) -> np.ndarray | float:
    """Quadratic surface a + b*u + c*v + d*u^2 + e*v^2 + f*u*v fitted robustly to the border.

    The border is mostly background, so this follows lighting gradients and vignetting across
    a photographed page. Returns the surface (H, W), or a number when it is flat.
    """
    h, w = gray.shape
    rows, cols = _border(gray)
    step = max(1, rows.size // 2048)  # plenty for 6 coefficients
    rows, cols = rows[::step], cols[::step]
    values = gray[rows, cols].astype(np.float64)
    u = cols * (2.0 / max(w - 1, 1)) - 1.0  # in [-1, 1]
    v = rows * (2.0 / max(h - 1, 1)) - 1.0
    design = np.stack([np.ones_like(u), u, v, u * u, v * v, u * v], axis=1)

    # Start from pixels near the median, then alternate fit and 3-sigma rejection of ink.
    residual = values - np.median(values)
    keep = np.abs(residual) <= 3.0 * 1.4826 * np.median(np.abs(residual)) + 1e-3
    coef = np.array([np.median(values), 0, 0, 0, 0, 0], dtype=np.float64)
    for _ in range(4):
        if keep.sum() < 12:
            break
        # Normal equations with einsum, not lstsq: a BLAS thread pool woken for this tiny
        # problem keeps spinning afterwards and slows everything else on a busy machine.
        kept = design[keep]
        gram = np.einsum("ni,nj->ij", kept, kept) + 1e-9 * np.eye(6)  # (6, 6)
        coef = np.linalg.solve(gram, np.einsum("ni,n->i", kept, values[keep]))
        residual = values - np.einsum("ni,i->n", design, coef)
        sigma = 1.4826 * float(np.median(np.abs(residual[keep])))
        new_keep = np.abs(residual) <= 3.0 * sigma + 1e-3
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep

    a, b, c, d, e, f = (float(x) for x in coef)
    if max(abs(b), abs(c), abs(d), abs(e), abs(f)) < 1e-3:  # flat: skip the full-size surface
        return a
    u = np.linspace(-1.0, 1.0, w, dtype=np.float32) if w > 1 else np.zeros(1, np.float32)
    v = np.linspace(-1.0, 1.0, h, dtype=np.float32) if h > 1 else np.zeros(1, np.float32)
    surface = (a + c * v + e * v * v)[:, None] + (b * u + d * u * u)[None, :]  # (H, W)
    if abs(f) >= 1e-3:
        surface += f * np.outer(v, u)
    return surface


def _ink_is_light(diff: np.ndarray, noise: float) -> bool:
    """Ink is the side (lighter or darker than the background) with more strong deviation."""
    stride = max(1, math.isqrt(diff.size // 250_000))  # a sample is enough to vote
    sample = diff[::stride, ::stride]
    margin = max(4.0 * noise, 0.1 * max(float(sample.max()), -float(sample.min())))
    light = np.maximum(sample - margin, 0.0).sum(dtype=np.float64)
    dark = np.maximum(-margin - sample, 0.0).sum(dtype=np.float64)
    return bool(light >= dark)


def _box3(a: np.ndarray) -> np.ndarray:
    """3x3 mean (zeros beyond the edge): strokes keep their level, pixel noise drops about 3x."""
    rows = a.copy()  # in place from here: full-size temporaries cost more than the adds
    rows[1:] += a[:-1]
    rows[:-1] += a[1:]
    out = rows.copy()
    out[:, 1:] += rows[:, :-1]
    out[:, :-1] += rows[:, 1:]
    out *= 1.0 / 9.0
    return out


def _isolate(ink: np.ndarray) -> np.ndarray:
    """Ink-high image (H, W) -> the digit cropped to its bounding box, float32 in [0, 1].

    Decisions (is there ink, where is it) are taken on a 3x3-smoothed copy, so that a faint
    but coherent stroke in a noisy photo is found and lone hot pixels are not; values come
    from the unsmoothed image.
    """
    smooth = _box3(ink)
    noise = _border_noise(smooth, ink_positive=True)
    found = smooth[smooth > max(4.0 * noise, 1e-3)]
    if found.size == 0:
        raise _blank()
    contrast = float(np.quantile(found, 0.95))  # robust to a few hot pixels
    if contrast < max(_MIN_CONTRAST, 8.0 * noise):
        raise _blank()
    strong = smooth > max(_STRONG * contrast, 5.0 * noise)

    c0, c1 = _main_span(strong.sum(axis=0))
    r0, r1 = _main_span(strong[:, c0:c1].sum(axis=1))
    c0, c1 = (c0 + x for x in _main_span(strong[r0:r1, c0:c1].sum(axis=0)))

    # One pixel of margin: anti-aliased edges next to strong ink belong to the digit.
    h, w = ink.shape
    top, left = max(r0 - 1, 0), max(c0 - 1, 0)
    bottom, right = min(r1 + 1, h), min(c1 + 1, w)
    core = np.zeros((bottom - top, right - left), dtype=bool)
    core[r0 - top : r1 - top, c0 - left : c1 - left] = strong[r0:r1, c0:c1]
    near = core.copy()  # 3x3 dilation, separable
    near[1:] |= core[:-1]
    near[:-1] |= core[1:]
    grown = near.copy()
    grown[:, 1:] |= near[:, :-1]
    grown[:, :-1] |= near[:, 1:]

    x = ink[top:bottom, left:right]
    level = float(np.quantile(x[core], 0.95))  # the ink's level in the unsmoothed image
    if level <= 0.0:
        raise _blank()
    # Dead zone below t, linear ramp back to identity at 2t: noise fades out, edges stay smooth.
    # t follows the pixel noise (3x the smoothed one), but never eats more than 10% of the ink.
    t = level * max(_FAINT, min(12.0 * noise / level, 0.1))
    x = np.where(x >= 2.0 * t, x, 2.0 * (x - t))
    digit = np.where(grown, np.clip(x, 0.0, level), 0.0).astype(np.float32) * (1.0 / level)

    on = digit > 0
    if not on.any():
        raise _blank()
    rows, cols = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
    return digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _main_span(profile: np.ndarray) -> tuple[int, int]:
    """[start, stop) of the nonzero profile after dropping light detached runs at either end."""
    idx = np.flatnonzero(profile)
    gaps = np.flatnonzero(np.diff(idx) > 1)
    starts = np.concatenate([idx[:1], idx[gaps + 1]])
    stops = np.concatenate([idx[gaps], idx[-1:]]) + 1
    mass = np.add.reduceat(profile, starts).astype(np.float64)
    first, last, floor = 0, len(starts) - 1, _SPECK * mass.sum()
    while first < last and mass[first] < floor:
        first += 1
    while last > first and mass[last] < floor:
        last -= 1
    return int(starts[first]), int(stops[last])


def _fit_box(digit: np.ndarray) -> np.ndarray:
    """(h, w) -> longest side exactly 20, aspect kept, anti-aliased; peak rescaled to 1."""
    h, w = digit.shape
    scale = _BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # Pillow wants (W, H)
    patch = np.asarray(Image.fromarray(digit).resize(size, Image.Resampling.LANCZOS))
    patch = np.clip(patch, 0.0, 1.0)  # Lanczos rings a little past 0 and 1
    peak = float(patch.max())
    if peak <= 0.0:
        raise _blank()
    return patch * (1.0 / peak)  # thin strokes lose contrast when shrunk a lot; MNIST saturates


def _center(patch: np.ndarray) -> np.ndarray:
    """Place (h, w) in 28x28 with its center of mass at (14, 14), whole-pixel shift -> uint8."""
    h, w = patch.shape
    mass = float(patch.sum())
    com_row = float(np.arange(h) @ patch.sum(axis=1)) / mass
    com_col = float(np.arange(w) @ patch.sum(axis=0)) / mass
    # Rounded half down, so a symmetric 20-px patch gets equal 4-px margins. Clamped so no ink
    # is cut off, which only matters for very lopsided shapes.
    top = min(max(math.ceil(_SIDE / 2 - com_row - 0.501), 0), _SIDE - h)
    left = min(max(math.ceil(_SIDE / 2 - com_col - 0.501), 0), _SIDE - w)
    out = np.zeros((_SIDE, _SIDE), dtype=np.float32)
    out[top : top + h, left : left + w] = patch
    return np.rint(out * 255.0).astype(np.uint8)
