"""Does an image look like the training images at all? The distance from their PCA subspace.

A classifier's softmax always names a class, and often a confident one for an input that is
no digit: a scribble can get "8" at 99 %. Confidence alone cannot say "this is not a digit".
The training images, though, lie close to a low-dimensional subspace of pixel space: a few
dozen principal directions rebuild most of any digit. An image far from that subspace (a
large reconstruction residual) is unlike everything the model learned from, so its answer
means little, whatever its confidence.

    residual(x) = || (x - mean) - P^T P (x - mean) ||,   P: the top k principal directions

The threshold is a high quantile of the residuals of training images held out of the fit,
so about (1 - quantile) of real digits are refused. NumPy only (one eigendecomposition).
"""

from __future__ import annotations

import numpy as np

PREFIX = "input_space."         # the arrays' names in a model file
DIRECTIONS = 40
QUANTILE = 0.995


class InputSpace:
    """The mean image, the top principal directions (k, D) and the residual threshold."""

    def __init__(self, mean: np.ndarray, directions: np.ndarray, threshold: float):
        self.mean = np.asarray(mean, np.float32).reshape(-1)
        self.directions = np.asarray(directions, np.float32)
        self.threshold = float(threshold)
        if self.directions.ndim != 2 or self.directions.shape[1] != self.mean.size:
            raise ValueError(f"input space: directions {self.directions.shape} do not match "
                             f"a mean of {self.mean.size} pixels")
        if np.isnan(self.threshold) or not np.isfinite(self.mean).all():
            raise ValueError("input space: its mean or threshold is not a number")

    @classmethod
    def fit(cls, images: np.ndarray, *, directions: int = DIRECTIONS,
            quantile: float = QUANTILE, held_out: float = 1 / 6, rng=0) -> InputSpace:
        """PCA of uint8 (or [0, 1] float) training images; the threshold from a held-out part.

        The images are shuffled with `rng`; `held_out` of them (10,000 of MNIST's 60,000) set
        the threshold and take no part in the fit, so it is what new digits would see.
        """
        x = np.asarray(images).reshape(len(images), -1)     # as given: uint8 stays small
        if len(x) < 3:
            raise ValueError(f"input space: {len(x)} images are too few to fit")
        order = np.random.default_rng(rng).permutation(len(x))
        n_held = max(1, int(len(x) * held_out))
        fit_rows, held_rows = order[n_held:], order[:n_held]
        directions = min(directions, len(fit_rows) - 1, x.shape[1])   # tiny sets in tests
        # Mean and scatter matrix chunk by chunk: 60,000 float images would be 190 MB.
        mean = sum(_pixels(x[rows]).sum(axis=0, dtype=np.float64)
                   for rows in _chunks(fit_rows)) / len(fit_rows)
        mean32 = mean.astype(np.float32)
        scatter = np.zeros((x.shape[1], x.shape[1]))
        for rows in _chunks(fit_rows):
            centered = _pixels(x[rows]) - mean32
            scatter += centered.T @ centered
        # Principal directions: eigenvectors of the (D, D) scatter matrix, largest first.
        _, vectors = np.linalg.eigh(scatter)                 # ascending eigenvalues
        top = vectors[:, ::-1][:, :directions].T             # (k, D)
        space = cls(mean, top, np.inf)
        space.threshold = float(np.quantile(space.residual(x[held_rows]), quantile))
        return space

    def residual(self, images: np.ndarray) -> np.ndarray:
        """(N,) distance of each image (pixels in [0, 1]) from the subspace."""
        x = np.asarray(images).reshape(len(images), self.mean.size)
        out = np.empty(len(x))
        for rows in _chunks(np.arange(len(x))):
            centered = _pixels(x[rows]) - self.mean
            centered -= (centered @ self.directions.T) @ self.directions
            out[rows] = np.sqrt(np.einsum("ij,ij->i", centered, centered))
        return out

    def typical(self, images: np.ndarray) -> np.ndarray:
        """(N,) True where an image is as close to the subspace as the held-out digits were."""
        return self.residual(images) <= self.threshold

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {PREFIX + "mean": self.mean, PREFIX + "directions": self.directions,
                PREFIX + "threshold": np.array([self.threshold], np.float32)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> InputSpace | None:
        """The space stored in a model file's arrays, or None when it holds none."""
        if PREFIX + "mean" not in arrays:
            return None
        try:
            threshold = np.asarray(arrays[PREFIX + "threshold"]).reshape(1)[0]
            return cls(arrays[PREFIX + "mean"], arrays[PREFIX + "directions"], threshold)
        except (KeyError, ValueError) as exc:       # a damaged file: load_model says so
            raise ValueError(f"input space arrays damaged ({exc})") from None


def _chunks(rows: np.ndarray, size: int = 4096):
    """Consecutive pieces of an index array (bounded temporaries)."""
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def _pixels(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 rows in [0, 1]; float images are taken as already scaled."""
    x = np.asarray(images)
    rows = x.reshape(len(x), -1)
    if rows.dtype == np.uint8:
        return rows.astype(np.float32) * np.float32(1 / 255)
    return rows.astype(np.float32)          # a copy: callers may modify it
