"""Layers: Parameter, Layer, Dense, activations, Dropout, BatchNorm1d, Flatten.

Every layer is a forward/backward pair on row-major batches (N, D). Gradient buffers
are allocated once and written in place, so optimizers can hold views of them.
Convolutions live in conv.py.
"""

from __future__ import annotations

import math

import numpy as np

from .init import as_rng, initializer


class Parameter:
    """A trainable array and its gradient, same shape and dtype."""

    __slots__ = ("data", "grad", "name")

    def __init__(self, data: np.ndarray, name: str = ""):
        self.data = data
        self.grad = np.zeros_like(data)
        self.name = name

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def __repr__(self) -> str:
        return f"Parameter({self.name or '?'}, shape={self.data.shape}, dtype={self.data.dtype})"


class Layer:
    """Base class: stateless by default, no parameters, train mode on.

    The attributes below are everything the model, the fast paths (parallel.py), the ONNX
    export and the gradient checks read from a layer; subclasses override the defaults.
    """

    # Train mode (dropout drops, batch norm uses the batch's statistics); Sequential sets it.
    training = True
    # Rank of the input batch the layer expects: 2 for (N, D) rows, 4 for (N, C, H, W) maps.
    # The model checks the first layer's input against it, and its layer-sequence check too.
    input_ndim = 2
    # True when forward() in eval mode computes its output from its argument alone (what it
    # stores on self is never read back), so row chunks of one batch may run in parallel
    # threads (barenet.parallel). Layers with reused scratch buffers (Conv2D) keep False.
    row_parallel = False
    # True when forward/backward need sums over the whole batch (batch norm): while a batch is
    # split across cores, parallel.SplitBatch then sets `batch_sums`, a function that turns
    # this part's (D,) sums into the whole batch's. None: the batch is all here.
    uses_batch_sums = False
    batch_sums = None
    # ReLU sets `commutes_with_max` (max(relu(x)) == relu(max(x)), gradients included; not
    # true of Sigmoid or Tanh, whose float rounding makes new ties), max pools set `max_pool`:
    # a max pool right after such a layer runs first, on a quarter of the values, with the
    # same numbers (Sequential.run_order).
    commutes_with_max = False
    max_pool = False

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError  # abstract

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """dL/dx from dL/dy, writing parameter grads in place. input_grad=False (the model
        passes it for the first layer) lets a layer skip dL/dx and return None. Sequential's
        backward takes the same flag, for the input of the whole model."""
        raise NotImplementedError  # abstract

    def parameters(self) -> list[Parameter]:
        return []

    def buffers(self) -> dict[str, np.ndarray]:
        """Non-trainable state saved with the model (e.g. BatchNorm running statistics)."""
        return {}

    def config(self) -> dict:
        """JSON-able constructor arguments; with the class name this rebuilds the layer."""
        return {}

    def release(self) -> None:
        """Drop the arrays forward kept for backward and the scratch buffers (the `_` names):
        after inference nothing needs them, and a conv net's come to ~250 MB per model."""
        for name, value in vars(self).items():
            if name.startswith("_") and isinstance(value, np.ndarray):
                setattr(self, name, None)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class Dense(Layer):
    """Fully connected: y = x @ W + b, (N, n_in) -> (N, n_out)."""

    row_parallel = True

    def __init__(self, n_in: int, n_out: int, *, init: str = "he", rng=None,
                 dtype=np.float32, bias: bool = True):
        if n_in <= 0 or n_out <= 0:
            raise ValueError(f"Dense sizes must be positive, got {n_in} -> {n_out}")
        self.n_in, self.n_out, self.init = n_in, n_out, init
        self.W = Parameter(initializer(init)((n_in, n_out), as_rng(rng), dtype), "W")
        self.b = Parameter(np.zeros(n_out, dtype=dtype), "b") if bias else None
        self._x = None                                  # input kept by forward for backward

    def forward(self, x):
        self._x = x
        y = x @ self.W.data
        if self.b is not None:
            y += self.b.data
        return y

    def backward(self, grad_out, input_grad=True):
        np.matmul(self._x.T, grad_out, out=self.W.grad)     # (n_in, N) @ (N, n_out)
        if self.b is not None:
            grad_out.sum(axis=0, out=self.b.grad)
        if not input_grad:                                  # first layer: dL/dx is never used
            return None
        return grad_out @ self.W.data.T                     # (N, n_in)

    def parameters(self):
        return [self.W] if self.b is None else [self.W, self.b]

    def config(self):
        cfg = {"n_in": self.n_in, "n_out": self.n_out, "init": self.init}
        if self.b is None:
            cfg["bias"] = False
        return cfg


class ReLU(Layer):
    """max(0, x), elementwise."""

    row_parallel = True
    commutes_with_max = True

    def forward(self, x):
        # Keep the input (as Dense does), not a mask: inference then costs one pass, and
        # backward builds the mask when it is needed.
        self._x = x
        return np.maximum(x, 0, dtype=x.dtype)

    def backward(self, grad_out, input_grad=True):
        return np.multiply(grad_out, self._x > 0)


class LeakyReLU(Layer):
    """x for x > 0, alpha * x otherwise."""

    row_parallel = True

    def __init__(self, alpha: float = 0.01):
        self.alpha = float(alpha)

    def forward(self, x):
        self._mask = mask = x > 0
        return np.where(mask, x, x * self.alpha)

    def backward(self, grad_out, input_grad=True):
        return np.where(self._mask, grad_out, grad_out * self.alpha)

    def config(self):
        return {"alpha": self.alpha}


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Stable logistic: exp only ever sees non-positive arguments, so it never overflows."""
    e = np.exp(-np.abs(x))                  # in (0, 1]
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


class Sigmoid(Layer):
    """1 / (1 + exp(-x)); dy/dx = y (1 - y)."""

    row_parallel = True

    def forward(self, x):
        self._y = y = sigmoid(x)
        return y

    def backward(self, grad_out, input_grad=True):
        return grad_out * self._y * (1.0 - self._y)


class Tanh(Layer):
    """tanh(x); dy/dx = 1 - y^2."""

    row_parallel = True

    def forward(self, x):
        self._y = y = np.tanh(x)
        return y

    def backward(self, grad_out, input_grad=True):
        return grad_out * (1.0 - self._y * self._y)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class GELU(Layer):
    """Gaussian error linear unit, tanh approximation (as in GPT-2 and PyTorch's 'tanh' mode).

    y = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
    """

    row_parallel = True

    def forward(self, x):
        self._x = x
        self._t = t = np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
        return 0.5 * x * (1.0 + t)

    def backward(self, grad_out, input_grad=True):
        x, t = self._x, self._t
        du = _SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x)
        return grad_out * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)


class SiLU(Layer):
    """x * sigmoid(x) (Swish); dy/dx = s + x s (1 - s)."""

    row_parallel = True

    def forward(self, x):
        self._x = x
        self._s = s = sigmoid(x)
        return x * s

    def backward(self, grad_out, input_grad=True):
        s = self._s
        return grad_out * (s + self._x * s * (1.0 - s))


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Stable softmax: subtracting the row max keeps exp's argument <= 0."""
    z = logits - logits.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


class Softmax(Layer):
    """Softmax over the last axis (for inference; train with the fused softmax cross-entropy)."""

    row_parallel = True

    def forward(self, x):
        self._y = y = softmax(x)
        return y

    def backward(self, grad_out, input_grad=True):
        y = self._y                                  # J^T g = y * (g - sum(g * y))
        return y * (grad_out - (grad_out * y).sum(axis=-1, keepdims=True))


class Dropout(Layer):
    """Inverted dropout: in train mode zero each unit with probability p and scale by 1/(1-p)."""

    row_parallel = True

    def __init__(self, p: float = 0.5, *, rng=None):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = as_rng(rng)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        keep = 1.0 - self.p
        # One uniform draw per unit; the mask already carries the 1/keep scale. It is written
        # over the draws (float32 input): one buffer and one pass fewer than cast-then-scale.
        draws = self.rng.random(x.shape, dtype=np.float32)
        kept = draws < keep
        mask = draws if x.dtype == np.float32 else np.empty(x.shape, x.dtype)
        np.multiply(kept, x.dtype.type(1.0 / keep), out=mask)
        self._mask = mask
        return x * mask

    def backward(self, grad_out, input_grad=True):
        return grad_out if self._mask is None else grad_out * self._mask

    def config(self):
        return {"p": self.p}


class _BatchNorm(Layer):
    """What both batch norms share: parameters, running statistics, sums over a split batch,
    and the eval-mode backward. Subclasses bring forward/backward for their layout."""

    uses_batch_sums = True

    def __init__(self, num_features: int, *, momentum: float = 0.1, eps: float = 1e-5,
                 dtype=np.float32):
        self.num_features, self.momentum, self.eps = num_features, float(momentum), float(eps)
        self.gamma = Parameter(np.ones(num_features, dtype=dtype), "gamma")
        self.beta = Parameter(np.zeros(num_features, dtype=dtype), "beta")
        self.running_mean = np.zeros(num_features, dtype=dtype)
        self.running_var = np.ones(num_features, dtype=dtype)

    def _total(self, local: np.ndarray) -> np.ndarray:
        """Sums over the whole batch: `local` itself, or, when the batch is split across
        cores, this part's sums plus the other parts' (the gradient needs them too)."""
        return local if self.batch_sums is None else self.batch_sums(local)

    def _whole_mean(self, sums: np.ndarray, rows: int):
        """Whole-batch (rows, mean) from this part's column sums and rows: one exchange."""
        total = self._total(np.append(sums, sums.dtype.type(rows)))
        return total[-1], total[:-1] * (1.0 / total[-1])

    def _eval_scale(self) -> np.ndarray:
        """gamma / sqrt(running_var + eps), (D,): in eval mode y = x * scale + shift."""
        return self.gamma.data / np.sqrt(self.running_var + self.eps)

    def _update_running(self, mean: np.ndarray, var: np.ndarray, rows) -> None:
        m = self.momentum                       # PyTorch convention: unbiased running var
        self.running_mean *= 1.0 - m
        self.running_mean += m * mean
        self.running_var *= 1.0 - m
        self.running_var += (m * rows / max(rows - 1, 1)) * var

    def _eval_backward(self, g: np.ndarray, x: np.ndarray,
                       input_grad: bool) -> np.ndarray | None:
        """Backward of the eval-mode affine map on rows: g, x (M, D) -> dx (M, D).

        The running statistics are constants, so dx = g * gamma / std, with no batch terms.
        """
        inv_std = 1.0 / np.sqrt(self.running_var + self.eps)
        xhat = (x - self.running_mean) * inv_std                # (M, D)
        (g * xhat).sum(axis=0, out=self.gamma.grad)
        g.sum(axis=0, out=self.beta.grad)
        if not input_grad:
            return None
        return g * (self.gamma.data * inv_std)

    def parameters(self):
        return [self.gamma, self.beta]

    def buffers(self):
        return {"running_mean": self.running_mean, "running_var": self.running_var}

    def config(self):
        return {"num_features": self.num_features, "momentum": self.momentum, "eps": self.eps}


class BatchNorm1d(_BatchNorm):
    """Batch normalization over the batch axis of (N, D); running stats used in eval mode."""

    row_parallel = True

    def forward(self, x):
        self._eval = not self.training
        if self._eval:                                 # fixed statistics: an affine map
            self._x = x
            scale = self._eval_scale()
            return x * scale + (self.beta.data - self.running_mean * scale)
        n, mean = self._whole_mean(x.sum(axis=0), len(x))
        self._rows = n
        xc = x - mean
        var = self._total((xc * xc).sum(axis=0)) * (1.0 / n)   # biased, for normalization
        self._inv_std = 1.0 / np.sqrt(var + self.eps)
        self._xhat = xc * self._inv_std
        self._update_running(mean, var, n)
        return self._xhat * self.gamma.data + self.beta.data

    def backward(self, grad_out, input_grad=True):
        if self._eval:
            return self._eval_backward(grad_out, self._x, input_grad)
        xhat = self._xhat
        (grad_out * xhat).sum(axis=0, out=self.gamma.grad)
        grad_out.sum(axis=0, out=self.beta.grad)
        if not input_grad:
            return None
        # dx = gamma/std * (g - mean(g) - xhat * mean(g * xhat)), all over the batch axis
        n = self._rows
        sum_g, sum_gx = np.split(self._total(np.concatenate([self.beta.grad,
                                                              self.gamma.grad])), 2)
        return (self.gamma.data * self._inv_std) * (
            grad_out - sum_g * (1.0 / n) - xhat * (sum_gx * (1.0 / n)))


class Flatten(Layer):
    """(N, ...) -> (N, prod(...))."""

    row_parallel = True

    def forward(self, x):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out, input_grad=True):
        return grad_out.reshape(self._shape)
