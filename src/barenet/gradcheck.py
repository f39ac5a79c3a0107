"""Numerical gradients by centered differences, and the relative error against backward().

Run in float64: with h = 1e-6 the truncation error is O(h^2) and rounding O(eps / h), both
far below the 1e-6 relative error a correct backward pass reaches.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .init import as_rng
from .layers import Layer


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / (||a|| + ||b||): scale-free, and not fooled by single near-zero entries."""
    denom = float(np.linalg.norm(a) + np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) / denom if denom > 0 else 0.0


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """d f / d x by centered differences, perturbing x in place (restored afterwards)."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = f()
        flat[i] = old - h
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2.0 * h)
    return grad


def check_layer(layer: Layer, x: np.ndarray, *, rng=None, h: float = 1e-6) -> dict[str, float]:
    """Relative errors of a layer's input and parameter gradients for L = sum(g * layer(x)).

    `g` is a random upstream gradient, so every output element matters. Stochastic layers
    must be deterministic between calls here (e.g. Dropout in eval mode or with a fixed mask).
    """
    rng = as_rng(rng)
    x = x.astype(np.float64)
    g = rng.standard_normal(layer.forward(x).shape)

    def loss() -> float:
        return float(np.sum(g * layer.forward(x)))

    layer.forward(x)
    analytic_x = layer.backward(g.copy())
    analytic_p = [p.grad.copy() for p in layer.parameters()]
    errors = {"input": relative_error(analytic_x, numerical_gradient(loss, x, h))}
    for p, analytic in zip(layer.parameters(), analytic_p):
        errors[p.name] = relative_error(analytic, numerical_gradient(loss, p.data, h))
    return errors


def check_model(model, loss_fn, x: np.ndarray, labels: np.ndarray, *,
                h: float = 1e-6) -> dict[str, float]:
    """Relative error of every parameter gradient of loss_fn(model(x), labels), and of the input."""
    x = x.astype(np.float64)

    def loss() -> float:
        return loss_fn(model.forward(x), labels)[0]

    _, grad = loss_fn(model.forward(x), labels)
    analytic_x = model.backward(grad, input_grad=True)
    params = model.parameters()
    analytic = [p.grad.copy() for p in params]
    errors = {"input": relative_error(analytic_x, numerical_gradient(loss, x, h))}
    for i, (p, a) in enumerate(zip(params, analytic)):
        errors[f"{i}.{p.name}"] = relative_error(a, numerical_gradient(loss, p.data, h))
    return errors
