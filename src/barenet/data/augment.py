"""On-the-fly augmentation of image batches: random affine maps and elastic distortions.

Each image gets its own rotation, scale, shift and, optionally, left-right mirror (one
inverse affine map per image) and, optionally, a smooth random displacement field (Simard,
Steinkraus & Platt 2003) and a rectangle of noise over part of it (random erasing, Zhong et
al. 2017). All images of a batch are resampled at once with bilinear
interpolation, and the fields are smoothed by a Gaussian written as two small GEMMs: NumPy
only. Randomness comes only from the given rng.
"""

from __future__ import annotations

import functools
import math

import numpy as np


class Augmenter:
    """Callable (batch, rng) -> augmented batch of the same shape and dtype.

    batch: float images in [0, 1], (N, H, W), (N, 1, H, W) or (N, H*W) with H == W.
    config: anything with shift (pixels), rotate (degrees), scale (relative), elastic_alpha,
    elastic_sigma attributes, e.g. barenet.config.AugmentConfig.
    """

    def __init__(self, config):
        self.shift = float(config.shift)
        self.rotate = float(config.rotate)
        self.scale = float(config.scale)
        self.elastic_alpha = float(config.elastic_alpha)
        self.elastic_sigma = float(config.elastic_sigma)
        self.flip = float(getattr(config, "flip", 0.0))
        self.erase = float(getattr(config, "erase", 0.0))
        self.erase_area = float(getattr(config, "erase_area", 0.3))

    @property
    def enabled(self) -> bool:
        return changes_images(self)

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self.enabled or len(batch) == 0:
            return batch
        images = _as_images(batch)                                  # (N, H, W)
        n, h, w = images.shape
        rows, cols = self.source_coordinates(n, h, w, rng)          # (N, H, W) each
        out = bilinear(images.astype(np.float32, copy=False), rows, cols)
        if self.erase:      # drawn only when on, so runs without erasing keep their numbers
            out = erase_rectangles(out, self.erase, self.erase_area, rng)
        return out.reshape(batch.shape).astype(batch.dtype, copy=False)

    def source_coordinates(self, n: int, h: int, w: int, rng: np.random.Generator):
        """Where each output pixel samples its input image: (rows, cols), each (N, H, W)."""
        angle = rng.uniform(-self.rotate, self.rotate, n) * (math.pi / 180.0)
        zoom = rng.uniform(1.0 - self.scale, 1.0 + self.scale, n)
        shift = rng.uniform(-self.shift, self.shift, (2, n))       # (row, col) shifts
        # Output pixel p maps back to source A^-1 (p - c - t) + c, A = zoom * rotation.
        cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom     # (N,)
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        y = np.arange(h, dtype=np.float32)[None, :, None] - (cy + shift[0])[:, None, None]
        x = np.arange(w, dtype=np.float32)[None, None, :] - (cx + shift[1])[:, None, None]
        if self.flip:       # drawn only when on, so runs without flips keep their numbers
            mirrored = rng.random(n) < self.flip
            x = x * np.where(mirrored, -1.0, 1.0).astype(np.float32)[:, None, None]
        c, s = cos[:, None, None], sin[:, None, None]
        rows = (c * y - s * x + cy).astype(np.float32)
        cols = (s * y + c * x + cx).astype(np.float32)
        if self.elastic_alpha:
            d_rows, d_cols = elastic_fields(n, h, w, self.elastic_alpha, self.elastic_sigma, rng)
            rows += d_rows
            cols += d_cols
        return rows, cols


def changes_images(config) -> bool:
    """True when any augmentation of `config` (an AugmentConfig or an Augmenter) is on."""
    from ..config import AUGMENTATIONS
    return any(float(getattr(config, key, 0.0)) for key in AUGMENTATIONS)


def erase_rectangles(images: np.ndarray, p: float, max_area: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Random erasing: with probability p, one rectangle of an image becomes uniform noise.

    images: (N, H, W) float in [0, 1]. The rectangle covers a share of the image drawn
    uniformly from [0.02, max_area], with an aspect ratio log-uniform in [0.3, 3.3], placed
    uniformly where it fits.
    """
    n, h, w = images.shape
    hit = rng.random(n) < p
    area = rng.uniform(0.02, max(max_area, 0.02), n) * (h * w)
    aspect = np.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3), n))       # height / width
    eh = np.clip(np.rint(np.sqrt(area * aspect)), 1, h).astype(np.intp)
    ew = np.clip(np.rint(np.sqrt(area / aspect)), 1, w).astype(np.intp)
    top = (rng.random(n) * (h - eh + 1)).astype(np.intp)
    left = (rng.random(n) * (w - ew + 1)).astype(np.intp)
    r = np.arange(h)[None, :, None]
    c = np.arange(w)[None, None, :]
    inside = ((r >= top[:, None, None]) & (r < (top + eh)[:, None, None])
              & (c >= left[:, None, None]) & (c < (left + ew)[:, None, None]))
    inside &= hit[:, None, None]
    noise = rng.random((n, h, w), dtype=np.float32)
    return np.where(inside, noise, images).astype(images.dtype, copy=False)


def elastic_fields(n: int, h: int, w: int, alpha: float, sigma: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two (N, H, W) displacement fields: uniform(-1, 1) noise, Gaussian-smoothed, times alpha."""
    noise = rng.uniform(-1.0, 1.0, (2 * n, h, w)).astype(np.float32)
    # Separable Gaussian as two small matrices: G_h @ noise @ G_w^T per image.
    smooth = np.matmul(gaussian_matrix(h, sigma), noise @ gaussian_matrix(w, sigma).T)
    smooth *= alpha
    return smooth[:n], smooth[n:]


@functools.lru_cache(maxsize=16)
def gaussian_matrix(size: int, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """(size, size) matrix of a 1-D Gaussian blur with zero padding outside the image.

    Same normalized kernel (radius = round(truncate * sigma)) as
    scipy.ndimage.gaussian_filter(..., mode="constant"), as a GEMM instead of a filter loop.
    """
    radius = int(truncate * sigma + 0.5)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    offset = np.arange(size)[None, :] - np.arange(size)[:, None]    # column - row
    inside = np.abs(offset) <= radius
    matrix = np.where(inside, kernel[np.clip(offset + radius, 0, 2 * radius)], 0.0)
    matrix = matrix.astype(np.float32)
    matrix.setflags(write=False)                                    # shared by the cache
    return matrix


def bilinear(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample (N, H, W) images at fractional (rows, cols) of shape (N, H, W); zero outside."""
    n, h, w = images.shape
    # A one-pixel zero border makes every neighbour of an in-range point a valid index.
    padded = np.zeros((n, h + 2, w + 2), dtype=np.float32)
    padded[:, 1:-1, 1:-1] = images
    r = np.clip(rows + 1.0, 0.0, h + 1.0)                           # padded coordinates
    c = np.clip(cols + 1.0, 0.0, w + 1.0)
    r0 = np.minimum(np.floor(r), h).astype(np.intp)                 # top-left neighbour
    c0 = np.minimum(np.floor(c), w).astype(np.intp)
    fr = (r - r0).astype(np.float32)
    fc = (c - c0).astype(np.float32)
    base = (np.arange(n, dtype=np.intp) * ((h + 2) * (w + 2)))[:, None, None]
    top_left = base + r0 * (w + 2) + c0
    flat = padded.reshape(-1)
    top = flat[top_left] * (1.0 - fc) + flat[top_left + 1] * fc
    bottom = flat[top_left + (w + 2)] * (1.0 - fc) + flat[top_left + (w + 3)] * fc
    return top * (1.0 - fr) + bottom * fr


def _as_images(batch: np.ndarray) -> np.ndarray:
    if batch.ndim == 3:
        return batch
    if batch.ndim == 4 and batch.shape[1] == 1:
        return batch[:, 0]
    if batch.ndim == 2:
        side = math.isqrt(batch.shape[1])
        if side * side == batch.shape[1]:
            return batch.reshape(len(batch), side, side)
    raise ValueError(f"augmentation expects (N, H, W), (N, 1, H, W) or (N, H*W) images, "
                     f"got shape {batch.shape}")
