"""Losses as fused (loss, grad) functions: softmax cross-entropy and mean squared error.

Each returns the mean loss over the batch as a Python float and its gradient with respect
to the network output, same shape and dtype as that output.
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p = z - max - log(sum exp(z - max)); finite even for logits of +-1e4."""
    z = logits - logits.max(axis=1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, *,
                          label_smoothing: float = 0.0) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against integer labels, and d loss / d logits.

    logits (N, K) float, labels (N,) int. With label smoothing eps the target is
    (1 - eps) one_hot + eps / K. The gradient is (softmax - target) / N, computed from
    one exp pass: no separate softmax layer, no division by probabilities.
    """
    n, k = logits.shape
    logp = log_softmax(logits)                          # (N, K)
    rows = np.arange(n)
    if label_smoothing:
        eps = float(label_smoothing)
        loss = -((1.0 - eps) * logp[rows, labels].sum() + eps / k * logp.sum()) / n
    else:
        loss = -logp[rows, labels].sum() / n
    grad = np.exp(logp, out=logp)                       # softmax, in place
    if label_smoothing:
        grad -= eps / k
        grad[rows, labels] -= 1.0 - eps
    else:
        grad[rows, labels] -= 1.0
    grad *= 1.0 / n
    return float(loss), grad


def mean_squared_error(outputs: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean of (outputs - targets)^2 over all elements, and its gradient 2 (out - target) / size.

    targets may be integer labels (N,) for a (N, K) output: they are one-hot encoded.
    """
    if targets.ndim == 1 and outputs.ndim == 2:
        onehot = np.zeros_like(outputs)
        onehot[np.arange(len(targets)), targets] = 1.0
        targets = onehot
    diff = outputs - targets.astype(outputs.dtype, copy=False)
    loss = float(np.mean(diff * diff))
    diff *= 2.0 / diff.size
    return loss, diff

