"""Saliency maps: the gradient of one class score with respect to the input pixels. NumPy only.

The gradient comes from the network's own layer backward passes, in eval mode (no dropout,
BatchNorm on its running statistics), of the class logit: Simonyan et al. 2014, "Deep Inside
Convolutional Networks". Pictures of the maps are drawn in app/plots.py.
"""

from __future__ import annotations

import numpy as np

from .model import Sequential, as_input

# Conv layers keep what backward needs only for batches up to their eval chunk (256 images).
CHUNK = 128


def input_gradient(model: Sequential, x: np.ndarray,
                   target: int | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(gradient, target): d logit[target] / d pixel for each image, and the classes used.

    x: (N, H, W) uint8 or float images, or one (H, W) image. target: None for each image's
    predicted class, an int for all images, or (N,) classes. The gradient has the shape of x
    and the model's dtype, per unit of the scaled [0, 1] pixel. Overwrites parameter grads.
    """
    single = x.ndim == 2
    images = x[None] if single else x
    n = len(images)
    if target is not None:
        target = np.broadcast_to(np.asarray(target, np.int64), (n,))
    params = model.parameters()
    dtype = params[0].data.dtype if params else np.float32           # float64 for gradchecks
    grads, targets = [], []
    with model.evaluating():
        for i in range(0, n, CHUNK):
            batch = as_input(images[i:i + CHUNK], dtype)            # (B, H, W) in [0, 1]
            logits = model.forward(batch)                          # (B, K)
            chosen = logits.argmax(axis=1) if target is None else target[i:i + CHUNK]
            grad_out = np.zeros_like(logits)
            grad_out[np.arange(len(batch)), chosen] = 1.0           # d logit[c] / d logits
            grads.append(model.backward(grad_out, input_grad=True).reshape(batch.shape))
            targets.append(chosen)
    grad = np.concatenate(grads)
    chosen = np.concatenate(targets)
    return (grad[0], chosen[:1]) if single else (grad, chosen)


def saliency_map(model: Sequential, x: np.ndarray,
                 target: int | np.ndarray | None = None) -> np.ndarray:
    """|d logit[target] / d pixel|, same shape as x ((H, W) or (N, H, W)); see input_gradient."""
    return np.abs(input_gradient(model, x, target)[0])
