"""Convolution on image batches (N, C, H, W): Conv2D, plus BatchNorm2d and Dropout2d.

Conv2D is im2col + one GEMM per batch; its backward scatters the column gradient back with
one strided add per kernel offset (kh * kw adds, never a loop over pixels). NumPy only.
Plain `Dropout` also works on feature maps (it drops single activations); Dropout2d drops
whole channels. Pooling lives in pooling.py, the window geometry both use in windows.py.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .init import as_rng, initializer
from .layers import Dropout, Layer, Parameter, _BatchNorm
from .windows import nchw, nhwc, offset_slices, output_size, pair, plain

# Eval-mode forwards (evaluate() sends 10,000 images at once) run im2col in chunks of this
# many images, so the column buffer stays a few tens of MB whatever the batch.
EVAL_CHUNK = 256


class _Padded:
    """A zero-bordered (N, Hp, Wp, C) input buffer reused across batches (border never written)."""

    def __init__(self):
        self._buf = None

    def __call__(self, xh: np.ndarray, ph: int, pw: int) -> np.ndarray:
        if ph == 0 and pw == 0:
            return xh
        n, h, w, c = xh.shape
        shape = (n, h + 2 * ph, w + 2 * pw, c)
        buf = self._buf
        if buf is None or buf.shape[1:] != shape[1:] or buf.shape[0] < n or buf.dtype != xh.dtype:
            buf = self._buf = np.zeros(shape, dtype=xh.dtype)
        out = buf[:n]
        out[:, ph:ph + h, pw:pw + w] = xh
        return out


class Conv2D(Layer):
    """2-D cross-correlation: (N, C_in, H, W) -> (N, C_out, Ho, Wo), Ho = (H + 2p - kh) // s + 1.

    W is (C_out, C_in, kh, kw) as in PyTorch. Internally activations are NHWC in memory and
    NCHW in shape (a transposed view), so im2col copies contiguous channel vectors and the
    GEMM output needs no transpose. The im2col buffer (N*Ho*Wo, kh*kw*C_in) is allocated
    once and reused; the forward pass is one GEMM against W as (C_out, kh*kw*C_in).
    """

    input_ndim = 4

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, *, stride=1,
                 padding=0, init: str = "he", bias: bool = True, rng=None, dtype=np.float32):
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"Conv2D channels must be positive, got {in_channels} -> "
                             f"{out_channels}")
        self.in_channels, self.out_channels, self.init = in_channels, out_channels, init
        self.kernel_size, self.stride = pair(kernel_size), pair(stride)
        self.padding = pair(padding)
        if min(self.kernel_size) <= 0 or min(self.stride) <= 0 or min(self.padding) < 0:
            raise ValueError("Conv2D needs kernel_size > 0, stride > 0 and padding >= 0")
        kh, kw = self.kernel_size
        shape = (out_channels, in_channels, kh, kw)
        self.W = Parameter(initializer(init)(shape, as_rng(rng), dtype), "W")
        self.b = Parameter(np.zeros(out_channels, dtype=dtype), "b") if bias else None
        self._pad = _Padded()
        self._cols_buf = None
        self._cols = None                       # (N*Ho*Wo, kh*kw*C_in) view kept for backward
        self._in_shape = None

    def _out_hw(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)

    def release(self) -> None:
        super().release()
        self._pad = _Padded()

    def _weight_matrix(self) -> np.ndarray:
        """(C_out, kh*kw*C_in [+ 1]): W in im2col's column order, then the bias if any."""
        w = self.W.data.transpose(0, 2, 3, 1).reshape(self.out_channels, -1)
        return w if self.b is None else np.concatenate([w, self.b.data[:, None]], axis=1)

    def _im2col(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) -> columns (N*Ho*Wo, kh*kw*C [+ 1]) in the reused buffer.

        With a bias the last column is all ones, so the one GEMM also adds the bias and the
        backward GEMM also sums its gradient.
        """
        n, c, h, w = x.shape
        ho, wo = self._out_hw(h, w)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        rows, k = n * ho * wo, kh * kw * c
        width = k + (self.b is not None)
        if c == 1:
            return self._im2col_one_channel(x, rows, k, width, (ho, wo))
        buf = self._cols_buf
        if buf is None or buf.shape[0] < rows or buf.shape[1] != width or buf.dtype != x.dtype:
            buf = self._cols_buf = np.empty((rows, width), dtype=x.dtype)
            buf[:, k:] = 1.0                                        # the bias column
        cols = buf[:rows]
        xp = self._pad(nhwc(x), *self.padding)                      # (N, Hp, Wp, C)
        win = sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]  # (N,Ho,Wo,C,kh,kw)
        target = cols[:, :k].reshape(n, ho, wo, kh, kw, c)          # only splits axes: a view
        np.copyto(target, win.transpose(0, 1, 2, 4, 5, 3))
        return cols

    def _im2col_one_channel(self, x, rows, k, width, out_hw):
        """im2col of a one-channel input (a first layer), kernel offset major.

        Row-major columns would be copied from windows in runs of kw floats; here each kernel
        offset's shifted image is a block with runs of Wo floats (2.4x faster for 5x5 on
        28x28), all copied by one call into a (K [+ 1], N*Ho*Wo) buffer whose transpose is
        the usual (N*Ho*Wo, K [+ 1]) columns: BLAS takes the transposed layout as it is.
        """
        n = x.shape[0]
        buf = self._cols_buf
        if (buf is None or buf.shape[1] < rows or buf.shape[0] != width
                or buf.dtype != x.dtype):
            buf = self._cols_buf = np.empty((width, rows), dtype=x.dtype)
            buf[k:] = 1.0                                           # the bias row
        cols_t = buf[:, :rows]
        image = self._pad(nhwc(x), *self.padding)[..., 0]           # (N, Hp, Wp)
        blocks = cols_t[:k].reshape(k, n, *out_hw)                  # only splits an axis
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        win = sliding_window_view(image, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]  # (N,Ho,Wo,kh,kw)
        np.copyto(blocks.reshape(kh, kw, n, *out_hw), win.transpose(3, 4, 0, 1, 2))
        return cols_t.T

    def _gemm(self, x: np.ndarray) -> np.ndarray:
        n, _, h, w = x.shape
        ho, wo = self._out_hw(h, w)
        cols = self._im2col(x)
        y = cols @ self._weight_matrix().T                          # (N*Ho*Wo, C_out)
        self._cols = cols
        return nchw(y.reshape(n, ho, wo, self.out_channels))

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2D expects (N, {self.in_channels}, H, W), got {x.shape}")
        self._in_shape = x.shape
        n = x.shape[0]
        if self.training or n <= EVAL_CHUNK:
            return self._gemm(x)
        # Inference on a large batch: bounded memory, nothing kept for backward.
        out = np.empty((n, *self._out_hw(*x.shape[2:]), self.out_channels), dtype=x.dtype)
        for i in range(0, n, EVAL_CHUNK):
            out[i:i + EVAL_CHUNK] = nhwc(self._gemm(x[i:i + EVAL_CHUNK]))
        self._cols = None
        return nchw(out)

    def backward(self, grad_out, input_grad=True):
        n, c, h, w = self._in_shape
        kh, kw = self.kernel_size
        g = nhwc(grad_out).reshape(-1, self.out_channels)          # (N*Ho*Wo, C_out)
        # (C_out, kh*kw*C_in [+ 1]): g^T cols, or the same product as (cols^T g)^T for a
        # one-channel layer's transposed columns, which BLAS runs twice as fast that way
        # (0.36 vs 0.81 ms, 64 images; the other way round 5.0 vs 5.4 ms for cnn-best's conv2).
        cols = self._cols
        grad_w = g.T @ cols if cols.flags.c_contiguous else (cols.T @ g).T
        k = kh * kw * c
        self.W.grad[...] = grad_w[:, :k].reshape(self.out_channels, kh, kw, c).transpose(0, 3, 1, 2)
        if self.b is not None:
            self.b.grad[...] = grad_w[:, k]                         # the ones column: sum of g
        if not input_grad:                 # first layer: dL/dx is never used
            return None
        ho, wo = grad_out.shape[2:]
        # Window gradients offset-major, (kh*kw, N, Ho, Wo, C_in): each offset's block is
        # contiguous, so the scatter-adds below run over long rows rather than C_in floats.
        w_offsets = self.W.data.reshape(self.out_channels, c, kh * kw).transpose(2, 0, 1)
        dcols = np.matmul(g, w_offsets).reshape(kh * kw, n, ho, wo, c)
        ph, pw = self.padding
        dxp = np.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=grad_out.dtype)
        # col2im: one strided add per kernel offset; overlapping windows accumulate.
        for i, (rows, cols) in enumerate(offset_slices(self.kernel_size, self.stride, (ho, wo))):
            dxp[:, rows, cols] += dcols[i]
        return nchw(dxp[:, ph:ph + h, pw:pw + w])

    def parameters(self):
        return [self.W] if self.b is None else [self.W, self.b]

    def config(self):
        cfg = {"in_channels": self.in_channels, "out_channels": self.out_channels,
               "kernel_size": plain(self.kernel_size), "stride": plain(self.stride),
               "padding": plain(self.padding), "init": self.init}
        if self.b is None:
            cfg["bias"] = False
        return cfg


class BatchNorm2d(_BatchNorm):
    """Batch normalization per channel over (N, H, W) of (N, C, H, W); running stats in eval."""

    input_ndim = 4

    def __init__(self, num_features: int, *, momentum: float = 0.1, eps: float = 1e-5,
                 dtype=np.float32):
        super().__init__(num_features, momentum=momentum, eps=eps, dtype=dtype)
        self._ones = None                       # GEMV summing vector, reused across batches

    def _column_sums(self, m: np.ndarray) -> np.ndarray:
        """Sums over the rows of (M, C) as a GEMV: far faster than m.sum(axis=0) when M >> C."""
        ones = self._ones
        if ones is None or len(ones) != len(m) or ones.dtype != m.dtype:
            ones = self._ones = np.ones(len(m), dtype=m.dtype)
        return ones @ m

    def forward(self, x):
        n, ch, h, w = x.shape
        xm = nhwc(x).reshape(-1, ch)            # (N*H*W, C); a view for NHWC-memory inputs
        # Per-channel vectors act on (N, H*W*C) rows as one image's worth of repeats (tile):
        # broadcasting a (C,) vector would run NumPy's inner loop over only C floats at a time.
        per_image, xi = h * w, xm.reshape(n, -1)
        self._eval = not self.training
        if self._eval:                          # fixed statistics: an affine map
            self._x = x
            scale = self._eval_scale()
            y = xi * np.tile(scale, per_image)
            y += np.tile(self.beta.data - self.running_mean * scale, per_image)
            return nchw(y.reshape(n, h, w, ch))
        rows, mean = self._whole_mean(self._column_sums(xm), len(xm))    # rows: N*H*W
        xc = xi - np.tile(mean, per_image)      # (N, H*W*C)
        y = np.multiply(xc, xc)                 # scratch for the squares, then the output
        var = self._total(self._column_sums(y.reshape(-1, ch))) * (1.0 / rows)   # biased
        self._rows = rows
        self._inv_std = 1.0 / np.sqrt(var + self.eps)
        xc *= np.tile(self._inv_std, per_image)
        self._xhat = xc                         # (N, H*W*C)
        self._update_running(mean, var, rows)
        np.multiply(xc, np.tile(self.gamma.data, per_image), out=y)
        y += np.tile(self.beta.data, per_image)
        return nchw(y.reshape(n, h, w, ch))

    def backward(self, grad_out, input_grad=True):
        n, ch, h, w = grad_out.shape
        g = nhwc(grad_out).reshape(-1, ch)      # (N*H*W, C)
        if self._eval:
            dx = self._eval_backward(g, nhwc(self._x).reshape(-1, ch), input_grad)
            return None if dx is None else nchw(dx.reshape(n, h, w, ch))
        xhat, rows, per_image = self._xhat, self._rows, h * w
        gi = g.reshape(n, -1)                   # (N, H*W*C), as xhat; vectors tiled (forward)
        self.beta.grad[...] = self._column_sums(g)
        tmp = gi * xhat
        self.gamma.grad[...] = self._column_sums(tmp.reshape(-1, ch))
        if not input_grad:
            return None
        sum_g, sum_gx = np.split(self._total(np.concatenate([self.beta.grad,
                                                              self.gamma.grad])), 2)
        # dx = gamma/std * (g - mean(g) - xhat * mean(g * xhat)), means over (N, H, W)
        a = self.gamma.data * self._inv_std
        np.multiply(xhat, np.tile(a * sum_gx * (1.0 / rows), per_image), out=tmp)
        tmp += np.tile(a * sum_g * (1.0 / rows), per_image)
        dx = gi * np.tile(a, per_image)
        dx -= tmp
        return nchw(dx.reshape(n, h, w, ch))


class Dropout2d(Dropout):
    """Drops whole channels of (N, C, H, W) with probability p (scaled by 1/(1-p)).

    A Dropout subclass, so run checkpoints save and restore its generator like Dropout's.
    """

    input_ndim = 4

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0], x.shape[1], 1, 1)
        self._mask = (self.rng.random(shape, dtype=np.float32) < keep).astype(x.dtype)
        self._mask *= 1.0 / keep
        return x * self._mask
