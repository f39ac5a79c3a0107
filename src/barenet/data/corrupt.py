"""Corruptions of digit images, each growing with one number: how a network fails.

Every function takes float images in [0, 1] of shape (N, H, W), a level and a seeded rng, and
returns new images of the same shape, float32, clipped to [0, 1]. Level 0 returns the images
unchanged, so every curve starts at the clean accuracy. NumPy only: rotations and shifts reuse
augmentation's bilinear resampling, blur its Gaussian-as-GEMM, stroke width a max/min over
the four neighbours.

    noise      Gaussian noise of standard deviation `level` (fraction of the pixel range)
    rotate     rotation by `level` degrees, clockwise or anticlockwise at random
    shift      translation by `level` pixels in a random direction
    stroke     thicker (+k: k dilations) or thinner (-k: k erosions) strokes, by the 4 neighbours
    blur       Gaussian blur of standard deviation `level` pixels
    occlude    a bar `level` pixels wide, horizontal or vertical, at a random place, set to 0
    contrast   contrast times `level` around each image's mean (1 = unchanged, 0 = flat grey)
    invert     blend towards the inverted image (0 = unchanged, 1 = white background)
"""

from __future__ import annotations

import math

import numpy as np

from .augment import bilinear, gaussian_matrix


def noise(images: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    return images + np.float32(level) * rng.standard_normal(images.shape, dtype=np.float32)


def rotate(images: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    n, h, w = images.shape
    angle = math.radians(level) * rng.choice([-1.0, 1.0], n)              # (N,)
    return _resample(images, angle, np.zeros((2, n)))


def shift(images: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    n = len(images)
    direction = rng.uniform(0.0, 2.0 * math.pi, n)
    offsets = level * np.stack([np.sin(direction), np.cos(direction)])    # (2, N): rows, cols
    return _resample(images, np.zeros(n), offsets)


def stroke(images: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    out = images
    for _ in range(abs(int(level))):
        out = _neighbourhood(out, np.maximum if level > 0 else np.minimum)
    return out


def blur(images: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    n, h, w = images.shape
    return np.matmul(gaussian_matrix(h, float(level)), images @ gaussian_matrix(w, float(level)).T)


def occlude(images: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    n, h, w = images.shape
    width = int(level)
    vertical = rng.random(n) < 0.5
    start = rng.integers(0, h - width + 1, n)                             # h == w for digits
    line = np.arange(h)[None, :]
    covered = (line >= start[:, None]) & (line < (start + width)[:, None])     # (N, H)
    mask = np.where(vertical[:, None, None], covered[:, None, :], covered[:, :, None])
    return np.where(mask, np.float32(0.0), images)


def contrast(images: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    mean = images.mean(axis=(1, 2), keepdims=True)                  # (N, 1, 1)
    return mean + (images - mean) * np.float32(level)


def invert(images: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    return images + np.float32(level) * (1.0 - 2.0 * images)


# name: (function, levels of the curve, what the level means)
CORRUPTIONS = {
    "noise": (noise, (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0), "noise σ (pixel range)"),
    "rotate": (rotate, (0, 10, 20, 30, 40, 50, 60), "rotation (degrees)"),
    "shift": (shift, (0, 1, 2, 3, 4, 5, 6), "shift (pixels)"),
    "stroke": (stroke, (-2, -1, 0, 1, 2), "stroke width (erode < 0 < dilate, pixels)"),
    "blur": (blur, (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0), "blur σ (pixels)"),
    "occlude": (occlude, (0, 2, 4, 6, 8, 10, 12), "occluding bar (pixels wide)"),
    "contrast": (contrast, (1.0, 0.8, 0.6, 0.4, 0.2, 0.1), "contrast (1 = original)"),
    "invert": (invert, (0.0, 0.25, 0.5, 0.75, 1.0), "inversion (0 = original, 1 = inverted)"),
}
IDENTITY_LEVEL = {"contrast": 1.0}          # the level that leaves images unchanged (else 0)


def corrupt(images: np.ndarray, name: str, level: float, seed: int = 0) -> np.ndarray:
    """`images` (N, H, W) uint8 or float in [0, 1] -> corrupted float32 images in [0, 1].

    The same (name, level, seed) gives the same images; level 0 (contrast 1) gives the
    images themselves.
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if images.dtype == np.uint8:            # scaled as the model scales uint8 (model.as_input)
        x = np.multiply(images, np.float32(1.0 / 255.0), dtype=np.float32)
    else:
        x = images.astype(np.float32, copy=True)
    if level == IDENTITY_LEVEL.get(name, 0):
        return x
    function = CORRUPTIONS[name][0]
    return np.clip(function(x, level, np.random.default_rng(seed)), 0.0, 1.0,
                   dtype=np.float32)


def _resample(images: np.ndarray, angle: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Rotate each image by angle[i] (radians) about its centre and move it by offsets[:, i]."""
    n, h, w = images.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    y = np.arange(h, dtype=np.float32)[None, :, None] - (cy + offsets[0])[:, None, None]
    x = np.arange(w, dtype=np.float32)[None, None, :] - (cx + offsets[1])[:, None, None]
    rows = (cos * y - sin * x + cy).astype(np.float32)     # where each output pixel samples
    cols = (sin * y + cos * x + cx).astype(np.float32)
    return bilinear(images, rows, cols)


def _neighbourhood(images: np.ndarray, pick) -> np.ndarray:
    """Max (dilation) or min (erosion) over each pixel and its 4 neighbours; outside is 0."""
    n, h, w = images.shape
    padded = np.zeros((n, h + 2, w + 2), np.float32)
    padded[:, 1:-1, 1:-1] = images
    out = padded[:, 1:-1, 1:-1].copy()
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):                  # up, down, left, right
        pick(out, padded[:, dy:dy + h, dx:dx + w], out=out)
    return out
