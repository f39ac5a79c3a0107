"""Optimizers (SGD with momentum/Nesterov, RMSprop, Adam, AdamW) and learning-rate schedules.

Sorted in order of increasing complexity. Hyperparameter names follow PyTorch. Every
optimizer moves its parameters into one flat buffer (the Parameters keep views into it), so
an update is a few in-place ufuncs over one contiguous array instead of a loop over arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .layers import Parameter

# State below this magnitude is set to exactly 0 every FLUSH_EVERY steps. A moment whose
# gradient stays 0 (a weight of an MNIST border pixel, say) decays by `momentum` every step,
# reaches the subnormal range (< 1.2e-38) after a few hundred steps and then costs a
# microcode assist in every ufunc that touches it: by the third MNIST epoch 1.4 % of the SGD
# velocity was subnormal, and by the sixth the update took twice as long. Decaying by 0.9
# per step, a value takes ~170 steps from 1e-30 to the subnormal range, so a flush every 64
# steps catches every entry before. Such a value moves no weight: lr * 1e-30 (or, in
# Adam/RMSprop, a moment that small over sqrt(v) + eps) is far below half an ulp of any
# float32 weight it could meet.
FLUSH_BELOW = 1e-30
FLUSH_EVERY = 64


def flatten_parameters(params: Sequence[Parameter]) -> tuple[np.ndarray, np.ndarray]:
    """Copy every parameter's data and grad into two flat buffers and re-point them as views.

    Returns (data, grad), each 1-D of the total size. Layers always reach their arrays through
    `param.data` / `param.grad`, so they see the new views transparently.
    """
    if not params:
        raise ValueError("optimizer got no parameters")
    dtype = np.result_type(*(p.data.dtype for p in params))
    total = sum(p.data.size for p in params)
    data = np.empty(total, dtype=dtype)
    grad = np.zeros(total, dtype=dtype)
    offset = 0
    for p in params:
        end = offset + p.data.size
        data[offset:end] = p.data.ravel()
        grad[offset:end] = p.grad.ravel()
        p.data = data[offset:end].reshape(p.data.shape)
        p.grad = grad[offset:end].reshape(p.grad.shape)
        offset = end
    return data, grad


class Optimizer:
    """Shared plumbing: flat buffers, L2 weight decay, gradient clipping, state for checkpoints."""

    state_names: tuple[str, ...] = ()
    # Keyword arguments beyond lr and the shared ones below, by their [optimizer] config names.
    options: tuple[str, ...] = ()

    def __init__(self, params, lr: float, *, weight_decay: float = 0.0,
                 clip_value: float | None = None, clip_norm: float | None = None):
        if lr <= 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.params = list(params)
        self.data, self.grad = flatten_parameters(self.params)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.clip_value, self.clip_norm = clip_value, clip_norm
        self.steps = 0
        self._tmp = np.empty_like(self.data)            # scratch, reused every step
        for name in self.state_names:
            setattr(self, name, np.zeros_like(self.data))

    def _flush_tiny_state(self) -> None:
        """Zero state entries below FLUSH_BELOW, every FLUSH_EVERY steps (see its comment)."""
        if self.steps % FLUSH_EVERY:
            return
        for name in self.state_names:
            state = getattr(self, name)
            np.abs(state, out=self._tmp)
            np.multiply(state, self._tmp >= FLUSH_BELOW, out=state)

    def _prepare_grad(self, l2: bool = True) -> np.ndarray:
        """Clip, then add L2 decay (g += wd * p), in place on the flat gradient."""
        g = self.grad
        if self.clip_value is not None:
            np.clip(g, -self.clip_value, self.clip_value, out=g)
        if self.clip_norm is not None:
            norm = math.sqrt(float(np.dot(g, g)))
            if norm > self.clip_norm:
                g *= self.clip_norm / (norm + 1e-12)
        if l2 and self.weight_decay:
            np.multiply(self.data, self.weight_decay, out=self._tmp)
            g += self._tmp
        return g

    def step(self) -> None:
        raise NotImplementedError  # abstract

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, JSON-able scalars) enough to continue bit for bit."""
        return ({n: getattr(self, n) for n in self.state_names},
                {"steps": self.steps, "lr": self.lr})

    def load_state_dict(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        for n in self.state_names:
            getattr(self, n)[...] = arrays[n]
        self.steps = int(meta["steps"])
        self.lr = float(meta["lr"])


class SGD(Optimizer):
    """v = momentum v + g;  p -= lr (g + momentum v) if nesterov else lr v."""

    state_names = ("velocity",)
    options = ("momentum", "nesterov")

    def __init__(self, params, lr: float = 0.01, *, momentum: float = 0.0,
                 nesterov: bool = False, **kw):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0.0:
            raise ValueError("nesterov needs momentum > 0")
        super().__init__(params, lr, **kw)
        self.momentum, self.nesterov = float(momentum), nesterov

    def step(self):
        # Each line is one pass over the flat buffer (~235k floats for the MNIST MLP), so
        # the count of lines is the cost: 2 passes plain, 4 with momentum, 6 Nesterov.
        g = self._prepare_grad()
        self.steps += 1
        tmp, mu = self._tmp, self.momentum
        if mu:
            v = self.velocity
            v *= mu
            v += g
            if self.nesterov:
                np.multiply(v, mu, out=tmp)
                tmp += g
                tmp *= self.lr
            else:
                np.multiply(v, self.lr, out=tmp)
        else:
            np.multiply(g, self.lr, out=tmp)
        self.data -= tmp
        self._flush_tiny_state()


class RMSprop(Optimizer):
    """s = alpha s + (1 - alpha) g^2;  p -= lr g / (sqrt(s) + eps)  (with optional momentum)."""

    state_names = ("square_avg", "momentum_buffer")
    options = ("alpha", "eps", "momentum")

    def __init__(self, params, lr: float = 0.01, *, alpha: float = 0.99, eps: float = 1e-8,
                 momentum: float = 0.0, **kw):
        super().__init__(params, lr, **kw)
        self.alpha, self.eps, self.momentum = float(alpha), float(eps), float(momentum)

    def step(self):
        g = self._prepare_grad()
        self.steps += 1
        s, tmp = self.square_avg, self._tmp
        s *= self.alpha
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - self.alpha
        s += tmp
        np.sqrt(s, out=tmp)
        tmp += self.eps
        np.divide(g, tmp, out=tmp)                      # g / (sqrt(s) + eps)
        if self.momentum:
            buf = self.momentum_buffer
            buf *= self.momentum
            buf += tmp
            tmp[...] = buf
        tmp *= self.lr
        self.data -= tmp
        self._flush_tiny_state()


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction; weight_decay is L2 added to the gradient."""

    state_names = ("exp_avg", "exp_avg_sq")
    options = ("betas", "eps")
    decoupled = False

    def __init__(self, params, lr: float = 0.001, *, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, **kw):
        super().__init__(params, lr, **kw)
        self.betas, self.eps = (float(betas[0]), float(betas[1])), float(eps)

    def step(self):
        g = self._prepare_grad(l2=not self.decoupled)
        self.steps += 1
        b1, b2 = self.betas
        m, v, tmp = self.exp_avg, self.exp_avg_sq, self._tmp
        if self.decoupled and self.weight_decay:         # AdamW: p *= 1 - lr wd
            self.data *= 1.0 - self.lr * self.weight_decay
        m *= b1                                          # m = b1 m + (1 - b1) g
        np.multiply(g, 1.0 - b1, out=tmp)
        m += tmp
        v *= b2                                          # v = b2 v + (1 - b2) g^2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - b2
        v += tmp
        if self.lr == 0.0:      # a warm-up's first batch: the moments move, the weights don't
            self._flush_tiny_state()
            return
        bc1 = 1.0 - b1 ** self.steps
        bc2 = 1.0 - b2 ** self.steps
        # p -= (lr / bc1) m / (sqrt(v / bc2) + eps). The step size moves into the
        # denominator, m / ((sqrt(v) / sqrt(bc2) + eps) * bc1 / lr), with both scalars folded
        # into the two ufuncs already there: one pass over the buffer fewer.
        step = self.lr / bc1
        np.sqrt(v, out=tmp)
        tmp *= 1.0 / (math.sqrt(bc2) * step)
        tmp += self.eps / step
        np.divide(m, tmp, out=tmp)
        self.data -= tmp
        self._flush_tiny_state()


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): p *= 1 - lr wd each step."""

    decoupled = True

    def __init__(self, params, lr: float = 0.001, *, weight_decay: float = 0.01, **kw):
        super().__init__(params, lr, weight_decay=weight_decay, **kw)


# Learning-rate schedules: a multiplier of the base learning rate as a function of the
# (fractional) epoch t, so warm-up and one-cycle can change the rate every batch.

class Schedule:
    per_batch = False
    # Constructor arguments, in order, by their [schedule] config names ("epochs": training's).
    options: tuple[str, ...] = ()

    def factor(self, t: float) -> float:
        return 1.0


class StepDecay(Schedule):
    """Multiply by gamma at each milestone epoch (e.g. 30, 50, 65)."""

    options = ("milestones", "gamma")

    def __init__(self, milestones: Sequence[int], gamma: float = 0.1):
        self.milestones, self.gamma = sorted(int(m) for m in milestones), float(gamma)

    def factor(self, t):
        return self.gamma ** sum(1 for m in self.milestones if t >= m)


class ExponentialDecay(Schedule):
    """gamma ** epoch."""

    options = ("gamma",)

    def __init__(self, gamma: float):
        self.gamma = float(gamma)

    def factor(self, t):
        return self.gamma ** math.floor(t)


class CosineWarmup(Schedule):
    """Linear warm-up over `warmup` epochs, then cosine decay to `min_factor` at `epochs`."""

    per_batch = True
    options = ("epochs", "warmup", "min_factor")

    def __init__(self, epochs: float, warmup: float = 0.0, min_factor: float = 0.0):
        self.epochs, self.warmup, self.min_factor = float(epochs), float(warmup), float(min_factor)

    def factor(self, t):
        if self.warmup and t < self.warmup:
            return t / self.warmup
        span = max(self.epochs - self.warmup, 1e-12)
        progress = min(max((t - self.warmup) / span, 0.0), 1.0)
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (
            1.0 + math.cos(math.pi * progress))


class OneCycle(Schedule):
    """Smith's one-cycle: cosine rise from 1/div to 1 over pct_start, then fall to 1/final_div."""

    per_batch = True
    options = ("epochs", "pct_start")

    def __init__(self, epochs: float, pct_start: float = 0.3, div: float = 25.0,
                 final_div: float = 1e4):
        self.epochs, self.pct_start = float(epochs), float(pct_start)
        self.div, self.final_div = float(div), float(final_div)

    def factor(self, t):
        peak = self.pct_start * self.epochs
        lo, end = 1.0 / self.div, 1.0 / self.final_div
        if t < peak:
            p = t / peak
            return lo + (1.0 - lo) * 0.5 * (1.0 - math.cos(math.pi * p))
        p = min((t - peak) / max(self.epochs - peak, 1e-12), 1.0)
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * p))


class ReduceOnPlateau:
    """Multiply the rate by `factor` when the metric has not improved for `patience` epochs.

    Stateful (fed at each epoch end), so it is a separate object, not a Schedule.
    """

    options = ("gamma", "patience")     # the config's gamma is the factor

    def __init__(self, factor: float = 0.1, patience: int = 5, mode: str = "min",
                 min_delta: float = 0.0, min_lr: float = 0.0):
        self.reduce_by, self.patience, self.mode = float(factor), int(patience), mode
        self.min_delta, self.min_lr = float(min_delta), float(min_lr)
        self.best: float | None = None
        self.bad_epochs = 0
        self.scale = 1.0

    def update(self, value: float, base_lr: float) -> float:
        """Feed the epoch's metric; returns the current multiplier."""
        better = (self.best is None or
                  (value < self.best - self.min_delta if self.mode == "min"
                   else value > self.best + self.min_delta))
        if better:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                self.scale = max(self.scale * self.reduce_by, self.min_lr / base_lr)
                self.bad_epochs = 0
        return self.scale

    def state(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "scale": self.scale}

    def load_state(self, state: dict) -> None:
        self.best, self.bad_epochs, self.scale = state["best"], state["bad_epochs"], state["scale"]
