"""Reference implementations: loops and textbook formulas, written to be read, not run fast.

Each function is the plain version of a fast path elsewhere in barenet (Conv2D's im2col, the
pools' strided slices, batch norm's fused backward, the optimizers' flat in-place updates);
tests/test_reference.py checks that each pair agrees to float64 rounding. barenet never calls
this module. The derivations are in docs/math.md. NumPy and the standard library only.
"""

from __future__ import annotations

import math

import numpy as np

Array = np.ndarray
Pair = int | tuple[int, int]        # an int n means (n, n)


def _pair(v: Pair) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def _pad(x: Array, padding: Pair, fill: float = 0.0) -> Array:
    """(N, C, H, W) -> (N, C, H + 2 ph, W + 2 pw), the border set to `fill`."""
    ph, pw = _pair(padding)
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)


def _unpad(xp: Array, padding: Pair) -> Array:
    ph, pw = _pair(padding)
    return xp[:, :, ph:xp.shape[2] - ph, pw:xp.shape[3] - pw]


# Dense and activations

def dense_forward(x: Array, W: Array, b: Array | None) -> Array:
    """y[n] = x[n] @ W + b, one row at a time.  x (N, D_in), W (D_in, D_out) -> y (N, D_out)."""
    y = np.zeros((x.shape[0], W.shape[1]), dtype=x.dtype)
    for n in range(x.shape[0]):
        y[n] = x[n] @ W + (0.0 if b is None else b)
    return y


def dense_backward(grad_out: Array, x: Array, W: Array) -> tuple[Array, Array, Array]:
    """grad_out (N, D_out) -> dx (N, D_in), dW (D_in, D_out), db (D_out,).

    Each row n used W once, so it adds its own outer product x[n] g[n]^T to dW.
    """
    dx = np.zeros_like(x)
    dW = np.zeros_like(W)
    for n in range(x.shape[0]):
        dx[n] = W @ grad_out[n]
        dW += np.outer(x[n], grad_out[n])
    return dx, dW, grad_out.sum(axis=0)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _gelu_u(x):
    return math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)


# Elementwise activations as (f, f'): forward is f(x), backward is grad_out * f'(x).
ACTIVATIONS = {
    "ReLU": (lambda x: np.maximum(x, 0.0), lambda x: np.where(x > 0, 1.0, 0.0)),
    "LeakyReLU": (lambda x: np.where(x > 0, x, 0.01 * x), lambda x: np.where(x > 0, 1.0, 0.01)),
    "Sigmoid": (_sigmoid, lambda x: _sigmoid(x) * (1.0 - _sigmoid(x))),
    "Tanh": (np.tanh, lambda x: 1.0 - np.tanh(x) ** 2),
    "SiLU": (lambda x: x * _sigmoid(x),
             lambda x: _sigmoid(x) + x * _sigmoid(x) * (1.0 - _sigmoid(x))),
    "GELU": (lambda x: 0.5 * x * (1.0 + np.tanh(_gelu_u(x))),
             lambda x: 0.5 * (1.0 + np.tanh(_gelu_u(x)))
             + 0.5 * x * (1.0 - np.tanh(_gelu_u(x)) ** 2)
             * math.sqrt(2.0 / math.pi) * (1.0 + 3.0 * 0.044715 * x**2)),
}


def softmax_backward(grad_out: Array, y: Array) -> Array:
    """Through the full Jacobian of each row, dy_k/dx_j = y_k (delta_kj - y_j): (N, K) -> (N, K)."""
    dx = np.zeros_like(grad_out)
    for n in range(len(y)):
        jacobian = np.diag(y[n]) - np.outer(y[n], y[n])        # (K, K), symmetric
        dx[n] = jacobian.T @ grad_out[n]
    return dx


# Convolution and pooling, on (N, C, H, W) arrays

def conv2d_forward(x: Array, W: Array, b: Array | None, stride: Pair = 1,
                   padding: Pair = 0) -> Array:
    """Cross-correlation, one output pixel at a time.

    x (N, C_in, H, W), W (C_out, C_in, kh, kw), b (C_out,) or None
    -> y (N, C_out, Ho, Wo), Ho = (H + 2 ph - kh) // sh + 1, likewise Wo.
    """
    (sh, sw), (kh, kw) = _pair(stride), W.shape[2:]
    xp = _pad(x, padding)                                      # zero border
    ho, wo = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    y = np.zeros((x.shape[0], W.shape[0], ho, wo), dtype=x.dtype)
    for n, o, r, c in np.ndindex(*y.shape):
        window = xp[n, :, r * sh:r * sh + kh, c * sw:c * sw + kw]     # (C_in, kh, kw)
        y[n, o, r, c] = np.sum(window * W[o]) + (0.0 if b is None else b[o])
    return y


def conv2d_backward(grad_out: Array, x: Array, W: Array, stride: Pair = 1,
                    padding: Pair = 0) -> tuple[Array, Array, Array]:
    """grad_out (N, C_out, Ho, Wo) -> dx (N, C_in, H, W), dW (C_out, C_in, kh, kw), db (C_out,).

    Output pixel (n, o, r, c) read one window of x, weighted by W[o]: it sends its gradient
    back to that window (times W[o]) and to W[o] (times the window). Overlapping windows add.
    """
    (sh, sw), (kh, kw) = _pair(stride), W.shape[2:]
    xp = _pad(x, padding)
    dxp, dW = np.zeros_like(xp), np.zeros_like(W)
    for n, o, r, c in np.ndindex(*grad_out.shape):
        rows, cols = slice(r * sh, r * sh + kh), slice(c * sw, c * sw + kw)
        g = grad_out[n, o, r, c]
        dW[o] += g * xp[n, :, rows, cols]
        dxp[n, :, rows, cols] += g * W[o]
    return _unpad(dxp, padding), dW, grad_out.sum(axis=(0, 2, 3))


def _pool_geometry(x, kernel_size, stride, padding):
    """(kh, kw), (sh, sw), (Ho, Wo) of a pool; stride defaults to the kernel size."""
    (kh, kw), (ph, pw) = _pair(kernel_size), _pair(padding)
    sh, sw = _pair(kernel_size if stride is None else stride)
    h, w = x.shape[2:]
    return (kh, kw), (sh, sw), ((h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)


def maxpool2d_forward(x: Array, kernel_size: Pair, stride: Pair | None = None,
                      padding: Pair = 0) -> Array:
    """Max over each window: (N, C, H, W) -> (N, C, Ho, Wo); padding counts as -inf."""
    (kh, kw), (sh, sw), (ho, wo) = _pool_geometry(x, kernel_size, stride, padding)
    xp = _pad(x, padding, -np.inf)
    y = np.zeros((*x.shape[:2], ho, wo), dtype=x.dtype)
    for n, c, r, s in np.ndindex(*y.shape):
        y[n, c, r, s] = xp[n, c, r * sh:r * sh + kh, s * sw:s * sw + kw].max()
    return y


def maxpool2d_backward(grad_out: Array, x: Array, kernel_size: Pair, stride: Pair | None = None,
                       padding: Pair = 0) -> Array:
    """Each window's gradient goes to its maximum; on ties, to the first in row-major order
    (what np.argmax returns, and what MaxPool2D does). (N, C, Ho, Wo) -> (N, C, H, W)."""
    (kh, kw), (sh, sw), _ = _pool_geometry(x, kernel_size, stride, padding)
    xp = _pad(x, padding, -np.inf)
    dxp = np.zeros_like(xp)
    for n, c, r, s in np.ndindex(*grad_out.shape):
        window = xp[n, c, r * sh:r * sh + kh, s * sw:s * sw + kw]
        i, j = np.unravel_index(np.argmax(window), window.shape)
        dxp[n, c, r * sh + i, s * sw + j] += grad_out[n, c, r, s]
    return _unpad(dxp, padding)


def avgpool2d_forward(x: Array, kernel_size: Pair, stride: Pair | None = None,
                      padding: Pair = 0) -> Array:
    """Mean over each window, zero padding counted (count_include_pad): -> (N, C, Ho, Wo)."""
    (kh, kw), (sh, sw), (ho, wo) = _pool_geometry(x, kernel_size, stride, padding)
    xp = _pad(x, padding)
    y = np.zeros((*x.shape[:2], ho, wo), dtype=x.dtype)
    for n, c, r, s in np.ndindex(*y.shape):
        y[n, c, r, s] = xp[n, c, r * sh:r * sh + kh, s * sw:s * sw + kw].mean()
    return y


def avgpool2d_backward(grad_out: Array, x: Array, kernel_size: Pair, stride: Pair | None = None,
                       padding: Pair = 0) -> Array:
    """Every element of a window gets 1/(kh kw) of its gradient. -> (N, C, H, W)."""
    (kh, kw), (sh, sw), _ = _pool_geometry(x, kernel_size, stride, padding)
    dxp = np.zeros_like(_pad(x, padding))
    for n, c, r, s in np.ndindex(*grad_out.shape):
        dxp[n, c, r * sh:r * sh + kh, s * sw:s * sw + kw] += grad_out[n, c, r, s] / (kh * kw)
    return _unpad(dxp, padding)


def global_avgpool2d_forward(x: Array) -> Array:
    """Mean of each feature map: (N, C, H, W) -> (N, C)."""
    return x.mean(axis=(2, 3))


def global_avgpool2d_backward(grad_out: Array, x: Array) -> Array:
    """Each of the H W positions gets 1/(H W) of its map's gradient: (N, C) -> (N, C, H, W)."""
    h, w = x.shape[2:]
    return np.ones_like(x) * grad_out[:, :, None, None] / (h * w)


# Batch normalization

def batchnorm_forward(x: Array, gamma: Array, beta: Array, eps: float = 1e-5):
    """Train mode, statistics of this batch: x (N, D) -> y (N, D), cache for backward.

    One node of the computational graph per line; batchnorm_backward walks them in reverse.
    """
    N = x.shape[0]
    mu = x.sum(axis=0) / N                      # (D,)
    xmu = x - mu                                # (N, D)
    sq = xmu**2
    var = sq.sum(axis=0) / N                    # biased (divisor N), used to normalize
    std = np.sqrt(var + eps)
    istd = 1.0 / std
    xhat = xmu * istd
    y = gamma * xhat + beta
    return y, (xhat, xmu, istd, std, gamma)


def batchnorm_backward(grad_out: Array, cache) -> tuple[Array, Array, Array]:
    """grad_out (N, D) -> dx (N, D), dgamma (D,), dbeta (D,): the chain rule, node by node."""
    xhat, xmu, istd, std, gamma = cache
    N = grad_out.shape[0]
    dbeta = grad_out.sum(axis=0)                # y = gamma * xhat + beta
    dgamma = (grad_out * xhat).sum(axis=0)
    dxhat = grad_out * gamma
    distd = (dxhat * xmu).sum(axis=0)           # xhat = xmu * istd
    dxmu = dxhat * istd
    dstd = -distd / std**2                      # istd = 1 / std
    dvar = 0.5 * dstd / std                     # std = sqrt(var + eps)
    dsq = np.ones_like(grad_out) * dvar / N     # var = sum_n sq / N
    dxmu += 2.0 * xmu * dsq                     # sq = xmu ** 2: the second path to xmu
    dmu = -dxmu.sum(axis=0)                     # xmu = x - mu
    dx = dxmu + np.ones_like(grad_out) * dmu / N    # mu = sum_n x / N
    return dx, dgamma, dbeta


def batchnorm_running_stats(running_mean: Array, running_var: Array, x: Array,
                            momentum: float = 0.1) -> tuple[Array, Array]:
    """New (running_mean, running_var) after a train batch x (N, D). PyTorch's convention:
    the running variance averages the unbiased batch variance (divisor N - 1)."""
    var_unbiased = x.var(axis=0, ddof=1)
    return ((1.0 - momentum) * running_mean + momentum * x.mean(axis=0),
            (1.0 - momentum) * running_var + momentum * var_unbiased)


def batchnorm_eval_forward(x: Array, gamma: Array, beta: Array, running_mean: Array,
                           running_var: Array, eps: float = 1e-5) -> Array:
    """Eval mode, fixed statistics: an affine map per feature.  (N, D) -> (N, D)."""
    return gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta


def batchnorm_eval_backward(grad_out: Array, x: Array, gamma: Array, running_mean: Array,
                            running_var: Array, eps: float = 1e-5) -> tuple[Array, Array, Array]:
    """The running statistics do not depend on x. -> dx (N, D), dgamma (D,), dbeta (D,)."""
    xhat = (x - running_mean) / np.sqrt(running_var + eps)
    dx = grad_out * gamma / np.sqrt(running_var + eps)
    return dx, (grad_out * xhat).sum(axis=0), grad_out.sum(axis=0)


def channels_as_rows(x: Array) -> Array:
    """(N, C, H, W) -> (N H W, C): BatchNorm2d is BatchNorm1d with every position a row."""
    return x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])


def rows_as_channels(rows: Array, shape: tuple[int, ...]) -> Array:
    """(N H W, C) -> (N, C, H, W), the inverse of channels_as_rows."""
    n, c, h, w = shape
    return rows.reshape(n, h, w, c).transpose(0, 3, 1, 2)


def batchnorm2d_forward(x: Array, gamma: Array, beta: Array, eps: float = 1e-5):
    """Train mode per channel over (N, H, W): (N, C, H, W) -> y (N, C, H, W), cache."""
    y, cache = batchnorm_forward(channels_as_rows(x), gamma, beta, eps)
    return rows_as_channels(y, x.shape), cache


def batchnorm2d_backward(grad_out: Array, cache) -> tuple[Array, Array, Array]:
    """(N, C, H, W) -> dx (N, C, H, W), dgamma (C,), dbeta (C,)."""
    dx, dgamma, dbeta = batchnorm_backward(channels_as_rows(grad_out), cache)
    return rows_as_channels(dx, grad_out.shape), dgamma, dbeta


# Losses

def softmax_cross_entropy(logits: Array, labels: Array,
                          label_smoothing: float = 0.0) -> tuple[float, Array]:
    """logits (N, K), labels (N,) int -> (mean loss, dL/dlogits (N, K)), one row at a time.

    The target of a row is t = (1 - eps) onehot(label) + eps / K, eps = label_smoothing.
    """
    N, K = logits.shape
    loss, grad = 0.0, np.zeros_like(logits)
    for n in range(N):
        z = logits[n] - logits[n].max()         # the same softmax; exp cannot overflow
        p = np.exp(z) / np.exp(z).sum()
        t = np.full(K, label_smoothing / K)
        t[labels[n]] += 1.0 - label_smoothing
        loss -= np.sum(t * np.log(p)) / N
        grad[n] = (p - t) / N
    return loss, grad


def mean_squared_error(outputs: Array, targets: Array) -> tuple[float, Array]:
    """mean((o - t)^2) over all N K entries and its gradient 2 (o - t) / (N K)."""
    diff = outputs - targets
    return np.mean(diff**2), 2.0 * diff / diff.size


# Optimizers: one parameter array at a time, new arrays returned, t counts steps from 1

def prepare_gradients(params: list[Array], grads: list[Array], *, weight_decay: float = 0.0,
                      clip_value: float | None = None, clip_norm: float | None = None,
                      decoupled: bool = False) -> list[Array]:
    """The gradients every barenet optimizer steps with, in this order: clip each entry to
    [-clip_value, clip_value]; rescale all together when their global norm exceeds
    clip_norm; add L2 decay weight_decay * p (unless decoupled: AdamW decays p itself)."""
    if clip_value is not None:
        grads = [np.clip(g, -clip_value, clip_value) for g in grads]
    if clip_norm is not None:
        norm = math.sqrt(sum(np.sum(g * g) for g in grads))
        if norm > clip_norm:
            grads = [g * clip_norm / (norm + 1e-12) for g in grads]
    if weight_decay and not decoupled:
        grads = [g + weight_decay * p for p, g in zip(params, grads)]
    return list(grads)


def sgd_step(p: Array, g: Array, v: Array, *, lr: float, momentum: float = 0.0,
             nesterov: bool = False) -> tuple[Array, Array]:
    """PyTorch's SGD: v = momentum v + g, then p - lr v (Nesterov: p - lr (g + momentum v)).
    Returns (p, v)."""
    v = momentum * v + g
    if nesterov:
        return p - lr * (g + momentum * v), v
    return p - lr * (v if momentum else g), v


def rmsprop_step(p: Array, g: Array, s: Array, buf: Array, *, lr: float, alpha: float = 0.99,
                 eps: float = 1e-8, momentum: float = 0.0) -> tuple[Array, Array, Array]:
    """s = alpha s + (1 - alpha) g^2; step g / (sqrt(s) + eps), through a momentum buffer
    if momentum. Returns (p, s, buf)."""
    s = alpha * s + (1.0 - alpha) * g**2
    step = g / (np.sqrt(s) + eps)
    if momentum:
        buf = momentum * buf + step
        step = buf
    return p - lr * step, s, buf


def adam_step(p: Array, g: Array, m: Array, v: Array, t: int, *, lr: float, beta1: float = 0.9,
              beta2: float = 0.999, eps: float = 1e-8) -> tuple[Array, Array, Array]:
    """Adam (Kingma & Ba 2015, Algorithm 1), bias correction written out. Returns (p, m, v)."""
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g**2
    m_hat = m / (1.0 - beta1**t)                # moments start at 0: undo the bias toward 0
    v_hat = v / (1.0 - beta2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def adamw_step(p: Array, g: Array, m: Array, v: Array, t: int, *, lr: float,
               weight_decay: float = 0.01, **adam) -> tuple[Array, Array, Array]:
    """AdamW (Loshchilov & Hutter 2019): shrink p by lr * weight_decay, then the Adam step
    with a gradient that holds no decay term. Returns (p, m, v)."""
    return adam_step(p * (1.0 - lr * weight_decay), g, m, v, t, lr=lr, **adam)
