"""Image files and arrays to float32 grayscale (H, W) in [0, 1]: any format and mode Pillow
reads, sizes checked from the header before decoding, transparency composited, large inputs
box-averaged. No digit logic here: preprocess.py turns the gray image into an MNIST digit.
"""

from __future__ import annotations

import io
import os
import threading
import warnings

import numpy as np
from PIL import Image

MAX_PIXELS = 40_000_000  # larger images are refused from their header, before any decoding
_ROWS = 1 << 20  # pixels per block when a full-size image is converted: bounds temporaries
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 weights, as Pillow's "L" conversion
# Warning filters are process-wide and catch_warnings is not thread-safe: without the lock, two
# threads (a web server's pool) could leave the "ignore" filter installed for good.
_DECODE_LOCK = threading.Lock()


class ImageError(ValueError):
    """The input cannot be used as a digit image; str() is one line meant for the user."""


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
    """uint8 (H, W, 4) -> float32 (H, W): as_gray's arithmetic, a block of rows at a time."""
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
    """Premultiplied uint8 (h, w, 4) -> float32 (h, w), composited as as_gray does."""
    premultiplied, alpha = _luma_alpha(rgba)
    gray = np.divide(premultiplied, alpha, out=np.zeros_like(alpha), where=alpha > 0)
    return _composite(np.minimum(gray, 1.0), alpha)


# Arrays to gray


def as_gray(image, side: int | None = None) -> np.ndarray:
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
