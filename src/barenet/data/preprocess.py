"""A user's drawing or photo turned into a digit the way MNIST made its digits.

MNIST: white ink on black, size-normalized into a 20x20 box (aspect kept, anti-aliased), centered
by center of mass in 28x28, uint8. Decoding uses Pillow; the numerics are NumPy. No MNIST I/O here.
"""

from __future__ import annotations

import io
import math
import os
import threading
import warnings

import numpy as np
from PIL import Image

__all__ = ["DIGIT_MAX_PIXELS", "MAX_PIXELS", "ImageError", "load_digit", "load_image",
           "preprocess_image"]

MAX_PIXELS = 40_000_000  # larger images are refused from their header, before any decoding
# A digit needs far fewer: load_digit (the server) refuses above this, as Pillow's bomb guard
# does above 179 MP; 16 MP is a 4608x3456 phone photo.
DIGIT_MAX_PIXELS = 16_000_000
_ROWS = 1 << 20  # pixels per block when a full-size image is converted: bounds temporaries
_WORK_SIDE = 640  # larger arrays are box-averaged below this first: the digit ends up 20 px
_BOX, _SIDE = 20, 28  # digit fits a 20x20 box, centered by mass in 28x28
_STRONG = 0.25  # of the ink level: surely ink; the digit is what lies on or next to such pixels
_FAINT = 0.02  # of the ink level: below this, even next to a stroke, a pixel is background
_SPECK = 0.02  # a detached end of the ink with less of its mass than this is a speck, not digit
_MIN_CONTRAST = 0.05  # of full scale: less between ink and background means the image is blank
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 weights, as Pillow's "L" conversion
# Warning filters are process-wide and catch_warnings is not thread-safe: without the lock, two
# threads (a web server's pool) could leave the "ignore" filter installed for good.
_DECODE_LOCK = threading.Lock()


class ImageError(ValueError):
    """The input cannot be used as a digit image; str() is one line meant for the user."""


def _blank() -> ImageError:
    return ImageError("no digit found: the image is blank (nothing stands out from the background)")


# Decoding


def load_image(source: str | os.PathLike | bytes, *, max_pixels: int = MAX_PIXELS,
               work_side: int | None = None) -> np.ndarray:
    """Decode an image file or its bytes to float32 grayscale (H, W) in [0, 1].

    Any format and mode Pillow reads; EXIF orientation applied; the first frame of animations.
    Transparent pixels are composited onto white when the visible content is dark and onto black
    when it is light, so strokes on a transparent canvas survive in either colour.
    With `work_side`, larger images come back box-averaged by an integer factor, longer side
    still at least `work_side` (JPEGs decoded at that scale): memory and time stay bounded.
    Raises ImageError (one line) for zero bytes, undecodable data, NaN or infinite pixels, or
    more than `max_pixels` pixels (read from the header, before decoding).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = "image data"
        if len(source) == 0:
            raise ImageError(f"cannot read {name}: zero bytes")
        fp = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        name = f"image file '{os.fspath(source)}'"
        try:
            fp = open(source, "rb")  # closed in the finally below
        except OSError as e:
            raise ImageError(f"cannot read {name}: {e.strerror or e}") from None
    else:
        raise TypeError(f"source must be a path or bytes, not {type(source).__name__}")
    try:
        return _decode(fp, name, max_pixels, work_side)
    finally:
        fp.close()


def load_digit(source: str | os.PathLike | bytes) -> np.ndarray:
    """load_image for preprocess_image, as the server and `barenet predict` use it: at most
    DIGIT_MAX_PIXELS, decoded at the resolution preprocessing works at. Same digit, bounded cost
    (a 16-bit RGBA bomb of 40 MP took 1.7 GB and 5 s through load_image at full size)."""
    return load_image(source, max_pixels=DIGIT_MAX_PIXELS, work_side=_WORK_SIDE)


def _decode(fp, name: str, max_pixels: int, work_side: int | None) -> np.ndarray:
    # Every outcome is an array or one ImageError, so Pillow's warnings add nothing: above all
    # not its DecompressionBombWarning, as our own pixel limit below is lower and checked first.
    with _DECODE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if fp.read(1) == b"":
                raise ImageError(f"cannot read {name}: zero bytes")
            fp.seek(0)
            with Image.open(fp) as im:  # lazy: reads the header only
                width, height = im.size
                if width * height > max_pixels:
                    raise _too_large(name, f"{width}x{height}", max_pixels)
                return _pixels_to_gray(im, name, work_side)
        except ImageError:
            raise
        except Image.DecompressionBombError:
            raise _too_large(name, "its header", max_pixels) from None
        except Image.UnidentifiedImageError:
            raise ImageError(f"cannot read {name}: not an image (unknown format)") from None
        except MemoryError:
            raise ImageError(f"cannot read {name}: not enough memory to decode it") from None
        except Exception as e:  # decoders fail on untrusted bytes in many ways; report them all
            detail = " ".join(str(e).split()) or type(e).__name__
            raise ImageError(f"cannot read {name}: corrupt or unsupported ({detail})") from None


def _too_large(name: str, size: str, limit: int) -> ImageError:
    return ImageError(f"cannot read {name}: too large ({size}; the limit is {limit:,} pixels)")


_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}  # EXIF orientation -> the turn that undoes it


def _pixels_to_gray(im: Image.Image, name: str, work_side: int | None) -> np.ndarray:
    """Pillow image (header read) -> float32 (H, W) in [0, 1], box-averaged to about
    `work_side` when given. Converted in Pillow's C code or in row blocks: the peak is a few
    bytes per pixel, not the dozens a float copy of every band costs."""
    try:  # read before decoding and applied last, so it turns the reduced image
        turn = _TRANSPOSE.get(im.getexif().get(0x0112))
    except Exception:  # a broken EXIF block should not cost the picture: keep it unrotated
        turn = None
    k = 1
    if work_side is not None:
        k = max(1, max(im.size) // work_side)
        if k > 1 and im.format == "JPEG":  # DCT scaling: decodes 1/2, 1/4 or 1/8 of the pixels
            im.draft(None, (max(1, im.size[0] // k), max(1, im.size[1] // k)))
            k = max(1, max(im.size) // work_side)
    mode = im.mode
    if mode in ("I", "F") or mode.startswith("I;16"):  # 16/32-bit gray: scale in NumPy
        if mode.startswith("I;16"):
            im = im.convert("I")
        a = np.array(im.reduce(k) if k > 1 else im, dtype=np.float32)  # writable
        if not np.isfinite(a).all():
            raise ImageError(f"cannot read {name}: it has NaN or infinite pixels")
        top = float(a.max()) if a.size else 0.0
        if mode != "F" or top > 1.0:  # float pixels are either in [0, 1] or in [0, 255]
            a *= 1.0 / (65535.0 if top > 255.0 else 255.0)
        gray = np.clip(a, 0.0, 1.0, out=a)
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        if k > 1:  # premultiplied, so colour under transparent pixels is not averaged in
            gray = _unpremultiplied(np.asarray(im.convert("RGBa").reduce(k)))
        else:
            gray = _composited(np.asarray(im.convert("RGBA")))
    else:
        if mode == "LAB":  # Pillow cannot convert it; its L band is the lightness
            im = im.getchannel("L")
        elif mode == "HSV":
            im = im.convert("RGB")
        im = im.convert("L")
        gray = np.array(im.reduce(k) if k > 1 else im, dtype=np.float32)
        gray *= 1.0 / 255.0
    if turn is not None:
        gray = np.ascontiguousarray(np.asarray(Image.fromarray(gray).transpose(turn)))
    return gray


def _composited(rgba: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 4) -> float32 (H, W): _as_gray's arithmetic, a block of rows at a time."""
    h, w = rgba.shape[:2]
    gray = np.empty((h, w), dtype=np.float32)
    step = max(1, _ROWS // max(w, 1))
    opaque_sum = weighted = alpha_sum = 0.0
    opaque_n, lowest = 0, 1.0
    for r in range(0, h, step):
        g, a = _luma_alpha(rgba[r : r + step])
        gray[r : r + step] = g
        opaque = a >= 0.5
        opaque_sum += float(g[opaque].sum(dtype=np.float64))
        opaque_n += int(opaque.sum())
        weighted += float((g * a).sum(dtype=np.float64))
        alpha_sum += float(a.sum(dtype=np.float64))
        lowest = min(lowest, float(a.min()) if a.size else 1.0)
    if lowest >= 1.0:
        return gray
    level = opaque_sum / opaque_n if opaque_n else (weighted / alpha_sum if alpha_sum > 0 else 0.)
    backdrop = 1.0 if level < 0.5 else 0.0
    for r in range(0, h, step):
        _, a = _luma_alpha(rgba[r : r + step])
        gray[r : r + step] = gray[r : r + step] * a + backdrop * (1.0 - a)
    return gray


def _luma_alpha(rgba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = rgba.astype(np.float32)
    a *= 1.0 / 255.0
    return a[..., 0] * _LUMA[0] + a[..., 1] * _LUMA[1] + a[..., 2] * _LUMA[2], a[..., 3]


def _unpremultiplied(rgba: np.ndarray) -> np.ndarray:
    """Premultiplied uint8 (h, w, 4) -> float32 (h, w), composited as _as_gray does."""
    premultiplied, alpha = _luma_alpha(rgba)
    gray = np.divide(premultiplied, alpha, out=np.zeros_like(alpha), where=alpha > 0)
    return _composite(np.minimum(gray, 1.0), alpha)


# Arrays to gray


def _as_gray(image, side: int | None = None) -> np.ndarray:
    """(H, W), (H, W, 1|2|3|4) of uint8/uint16/int/bool/float -> float32 (H, W), ink unknown.

    With `side`, box-averaged so the longer side is at most about that, before the float
    conversion where possible (a 12-megapixel RGB array is never copied at full size).
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (2, 3, 4))):
        raise ImageError(f"expected an image (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    if a.dtype == np.bool_:
        scale = 1.0
    elif np.issubdtype(a.dtype, np.integer):
        scale = 1.0 / (255.0 if a.dtype == np.uint8 or (a.size and a.max() <= 255) else 65535.0)
    elif np.issubdtype(a.dtype, np.floating):
        scale = 1.0
        if not np.isfinite(a).all():
            raise ImageError("image contains NaN or infinite values")
        top = float(np.abs(a).max()) if a.size else 0.0
        if top > 65535.0:  # beyond any pixel scale: brought to [-1, 1] so float32 sums stay finite
            a = a / top
    else:
        raise ImageError(f"expected a numeric image, got dtype {a.dtype}")
    alpha = a.ndim == 3 and a.shape[2] in (2, 4)
    if side is not None and not alpha:  # colour under alpha is averaged only after compositing
        a = _shrink(a, side)
    a = a.astype(np.float32)  # a copy: the caller's array is never written
    if scale != 1.0:
        a *= scale
    if a.ndim == 2:
        gray = a
    elif a.shape[2] >= 3:
        gray = a[..., 0] * _LUMA[0] + a[..., 1] * _LUMA[1] + a[..., 2] * _LUMA[2]
    else:
        gray = a[..., 0]
    if alpha:
        gray = _composite(gray, a[..., -1])
        if side is not None:
            gray = _shrink(gray, side)
    return gray


def _composite(gray: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Flatten transparency onto white behind dark content, onto black behind light content."""
    if alpha.size == 0 or alpha.min() >= 1.0:
        return gray
    opaque = alpha >= 0.5
    if opaque.any():
        level = float(gray[opaque].mean())
    else:
        total = float(alpha.sum())
        level = float((gray * alpha).sum()) / total if total > 0 else 0.0
    backdrop = 1.0 if level < 0.5 else 0.0
    return gray * alpha + backdrop * (1.0 - alpha)


def _shrink(a: np.ndarray, side: int) -> np.ndarray:
    """(H, W[, C]) box-averaged by an integer factor so the longer side is at most about `side`."""
    k = -(-max(a.shape[:2]) // side)
    if k <= 1:
        return a
    kh, kw = min(k, a.shape[0]), min(k, a.shape[1])
    h, w = a.shape[0] // kh, a.shape[1] // kw
    out = np.zeros((h, w, *a.shape[2:]), dtype=np.float32)
    for i in range(kh):  # k*k strided adds: many times faster than a reshaped mean
        for j in range(kw):
            out += a[i : h * kh : kh, j : w * kw : kw]
    out *= 1.0 / (kh * kw)
    return out


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
    gray = _as_gray(image, side=_WORK_SIDE)  # (H, W) float32
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
