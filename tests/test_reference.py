"""Every fast path equals its plain reference (barenet.reference), float64, to ~1e-10."""

import numpy as np
import pytest

import barenet as bn
from barenet import reference as ref
from barenet.layers import Parameter

RTOL = 1e-10


def assert_same(fast, expected):
    """Equal to float64 rounding: 1e-10 relative, entries near 0 judged against the largest."""
    fast, expected = np.asarray(fast), np.asarray(expected)
    assert fast.shape == expected.shape
    scale = float(np.max(np.abs(expected), initial=0.0))
    np.testing.assert_allclose(fast, expected, rtol=RTOL, atol=RTOL * scale)


# Dense, activations, softmax

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n,d_in,d_out", [(1, 3, 2), (5, 4, 7), (8, 16, 3)])
def test_dense(n, d_in, d_out, bias):
    rng = np.random.default_rng(n * d_in)
    layer = bn.Dense(d_in, d_out, rng=0, bias=bias, dtype=np.float64)
    if bias:
        layer.b.data[:] = rng.standard_normal(d_out)
    x, g = rng.standard_normal((n, d_in)), rng.standard_normal((n, d_out))
    b = layer.b.data if bias else None
    assert_same(layer.forward(x), ref.dense_forward(x, layer.W.data, b))
    dx, dW, db = ref.dense_backward(g, x, layer.W.data)
    assert_same(layer.backward(g), dx)
    assert_same(layer.W.grad, dW)
    if bias:
        assert_same(layer.b.grad, db)


@pytest.mark.parametrize("name", sorted(ref.ACTIVATIONS))
def test_activation(name):
    rng = np.random.default_rng(1)
    x, g = rng.standard_normal((4, 6)) * 3.0, rng.standard_normal((4, 6))
    f, derivative = ref.ACTIVATIONS[name]
    layer = getattr(bn, name)()
    assert_same(layer.forward(x), f(x))
    assert_same(layer.backward(g), g * derivative(x))


def test_softmax_layer():
    rng = np.random.default_rng(2)
    x, g = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    layer = bn.Softmax()
    y = layer.forward(x)
    assert_same(y, np.exp(x) / np.exp(x).sum(axis=1, keepdims=True))
    assert_same(layer.backward(g), ref.softmax_backward(g, y))


# Convolution and pooling

CONVS = [  # (C_in, C_out, kernel, stride, padding, H, W); C_in = 1 takes its own im2col path
    (1, 2, 3, 1, 0, 5, 5),
    (3, 4, 3, 1, 1, 6, 7),
    (2, 3, 3, 2, 0, 7, 7),
    (2, 3, 3, 2, 1, 6, 8),
    (3, 2, 5, 1, 2, 6, 6),
    (2, 2, (3, 2), (2, 1), (1, 0), 7, 5),
    (2, 3, 1, 1, 0, 4, 4),
    (1, 3, 3, 2, 1, 7, 6),
    (1, 2, (2, 3), (1, 2), (2, 1), 5, 6),
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("c_in,c_out,k,s,p,h,w", CONVS)
def test_conv2d(c_in, c_out, k, s, p, h, w, bias):
    rng = np.random.default_rng(c_in * 10 + c_out)
    layer = bn.Conv2D(c_in, c_out, k, stride=s, padding=p, bias=bias, rng=1, dtype=np.float64)
    b = None
    if bias:
        b = layer.b.data
        b[:] = rng.standard_normal(c_out)
    x = rng.standard_normal((3, c_in, h, w))
    y = layer.forward(x)
    assert_same(y, ref.conv2d_forward(x, layer.W.data, b, s, p))
    g = rng.standard_normal(y.shape)
    dx, dW, db = ref.conv2d_backward(g, x, layer.W.data, s, p)
    assert_same(layer.backward(g), dx)
    assert_same(layer.W.grad, dW)
    if bias:
        assert_same(layer.b.grad, db)


@pytest.mark.parametrize("c_in", [1, 3])
def test_conv2d_eval_forward_in_chunks(c_in):
    # 300 images: more than Conv2D's eval chunk (256), so inference runs in two chunks.
    rng = np.random.default_rng(3)
    layer = bn.Conv2D(c_in, 2, 3, stride=2, padding=1, rng=2, dtype=np.float64)
    layer.b.data[:] = rng.standard_normal(2)
    layer.training = False
    x = rng.standard_normal((300, c_in, 5, 4))
    assert_same(layer.forward(x), ref.conv2d_forward(x, layer.W.data, layer.b.data, 2, 1))


POOLS = [  # (kernel, stride, padding, H, W); stride None = kernel: tiled windows, a fast path
    (2, None, 0, 6, 6),
    (2, None, 0, 7, 5),
    (3, None, 0, 6, 9),
    ((2, 3), None, 0, 4, 7),
    (3, 2, 1, 7, 8),
    (3, 1, 0, 5, 6),
    (2, 1, 1, 4, 4),
    ((3, 2), (1, 2), (1, 1), 6, 5),
]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("k,s,p,h,w", POOLS)
def test_maxpool2d(k, s, p, h, w, ties):
    rng = np.random.default_rng(4)
    # Values in {0, 1, 2} tie in almost every window: the gradient must still go to the
    # first maximum in row-major order, once per window.
    x = (rng.integers(0, 3, (2, 3, h, w)) if ties else rng.standard_normal((2, 3, h, w)))
    x = x.astype(np.float64)
    layer = bn.MaxPool2D(k, s, p)
    y = layer.forward(x)
    assert_same(y, ref.maxpool2d_forward(x, k, s, p))
    g = rng.standard_normal(y.shape)
    assert_same(layer.backward(g), ref.maxpool2d_backward(g, x, k, s, p))


@pytest.mark.parametrize("k,s,p,h,w", POOLS)
def test_avgpool2d(k, s, p, h, w):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, h, w))
    layer = bn.AvgPool2D(k, s, p)
    y = layer.forward(x)
    assert_same(y, ref.avgpool2d_forward(x, k, s, p))
    g = rng.standard_normal(y.shape)
    assert_same(layer.backward(g), ref.avgpool2d_backward(g, x, k, s, p))


def test_global_avgpool2d():
    rng = np.random.default_rng(6)
    x, g = rng.standard_normal((3, 4, 5, 2)), rng.standard_normal((3, 4))
    layer = bn.GlobalAvgPool2D()
    assert_same(layer.forward(x), ref.global_avgpool2d_forward(x))
    assert_same(layer.backward(g), ref.global_avgpool2d_backward(g, x))


# Batch normalization

def _batchnorm(cls, d, rng):
    layer = cls(d, momentum=0.2, dtype=np.float64)
    layer.gamma.data[:] = rng.uniform(0.5, 1.5, d)
    layer.beta.data[:] = rng.standard_normal(d)
    layer.running_mean[:] = rng.standard_normal(d)
    layer.running_var[:] = rng.uniform(0.5, 2.0, d)
    return layer


BATCHNORMS = [  # (class, input shape, reference forward, backward, and rows of the statistics)
    (bn.BatchNorm1d, (6, 4), ref.batchnorm_forward, ref.batchnorm_backward, lambda x: x),
    (bn.BatchNorm1d, (2, 3), ref.batchnorm_forward, ref.batchnorm_backward, lambda x: x),
    (bn.BatchNorm2d, (3, 2, 4, 5), ref.batchnorm2d_forward, ref.batchnorm2d_backward,
     ref.channels_as_rows),
    (bn.BatchNorm2d, (2, 5, 1, 3), ref.batchnorm2d_forward, ref.batchnorm2d_backward,
     ref.channels_as_rows),
]


@pytest.mark.parametrize("cls,shape,forward,backward,as_rows", BATCHNORMS)
def test_batchnorm_train(cls, shape, forward, backward, as_rows):
    rng = np.random.default_rng(7)
    layer = _batchnorm(cls, shape[1], rng)
    mean0, var0 = layer.running_mean.copy(), layer.running_var.copy()
    x = rng.standard_normal(shape) * 2.0 + 1.0
    y_ref, cache = forward(x, layer.gamma.data, layer.beta.data, layer.eps)
    assert_same(layer.forward(x), y_ref)
    mean, var = ref.batchnorm_running_stats(mean0, var0, as_rows(x), layer.momentum)
    assert_same(layer.running_mean, mean)
    assert_same(layer.running_var, var)
    g = rng.standard_normal(shape)
    dx, dgamma, dbeta = backward(g, cache)
    assert_same(layer.backward(g), dx)
    assert_same(layer.gamma.grad, dgamma)
    assert_same(layer.beta.grad, dbeta)


def _eval_case(cls, shape, as_rows):
    rng = np.random.default_rng(8)
    layer = _batchnorm(cls, shape[1], rng)
    layer.training = False
    x, g = rng.standard_normal(shape), rng.standard_normal(shape)
    args = (layer.gamma.data, layer.running_mean, layer.running_var, layer.eps)
    y = ref.batchnorm_eval_forward(as_rows(x), args[0], layer.beta.data, *args[1:])
    dx, dgamma, dbeta = ref.batchnorm_eval_backward(as_rows(g), as_rows(x), *args)
    if cls is bn.BatchNorm2d:
        y, dx = ref.rows_as_channels(y, shape), ref.rows_as_channels(dx, shape)
    return layer, x, g, y, dx, dgamma, dbeta


@pytest.mark.parametrize("cls,shape,forward,backward,as_rows", BATCHNORMS)
def test_batchnorm_eval_forward(cls, shape, forward, backward, as_rows):
    layer, x, _, y, *_ = _eval_case(cls, shape, as_rows)
    assert_same(layer.forward(x), y)


def test_batchnorm1d_eval_backward():
    layer, x, g, _, dx, dgamma, dbeta = _eval_case(bn.BatchNorm1d, (5, 3), lambda x: x)
    layer.forward(x)
    assert_same(layer.backward(g), dx)
    assert_same(layer.gamma.grad, dgamma)
    assert_same(layer.beta.grad, dbeta)


def test_batchnorm2d_eval_backward():
    layer, x, g, _, dx, dgamma, dbeta = _eval_case(bn.BatchNorm2d, (2, 3, 4, 4),
                                                   ref.channels_as_rows)
    layer.forward(x)
    assert_same(layer.backward(g), dx)
    assert_same(layer.gamma.grad, dgamma)
    assert_same(layer.beta.grad, dbeta)


# Losses

@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("n,k", [(1, 2), (4, 3), (7, 10)])
def test_softmax_cross_entropy(n, k, smoothing):
    rng = np.random.default_rng(9)
    logits, labels = rng.standard_normal((n, k)) * 3.0, rng.integers(0, k, n)
    loss, grad = bn.softmax_cross_entropy(logits, labels, label_smoothing=smoothing)
    loss_ref, grad_ref = ref.softmax_cross_entropy(logits, labels, smoothing)
    assert loss == pytest.approx(loss_ref, rel=RTOL)
    assert_same(grad, grad_ref)


def test_mean_squared_error():
    rng = np.random.default_rng(10)
    outputs, labels = rng.standard_normal((4, 3)), np.array([0, 2, 1, 2])
    loss, grad = bn.mean_squared_error(outputs, labels)
    loss_ref, grad_ref = ref.mean_squared_error(outputs, np.eye(3)[labels])
    assert loss == pytest.approx(loss_ref, rel=RTOL)
    assert_same(grad, grad_ref)


# Optimizers: the flat, fused, in-place updates against one textbook step per array

SHAPES = [(3, 4), (4,), (2, 2, 3)]


def _trajectory(cls, kwargs, reference_step, state_count, steps=7):
    """Run `steps` updates with the same random gradients through both; compare each step."""
    rng = np.random.default_rng(11)
    start = [rng.standard_normal(s) for s in SHAPES]
    params = [Parameter(p.copy()) for p in start]
    opt = cls(params, **kwargs)
    prepare = {k: kwargs.get(k) for k in ("weight_decay", "clip_value", "clip_norm")}
    prepare["weight_decay"] = opt.weight_decay      # AdamW's default is 0.01
    hyper = {k: v for k, v in kwargs.items() if k not in prepare}
    if cls is bn.AdamW:
        hyper["weight_decay"] = opt.weight_decay
    ps = [p.copy() for p in start]
    states = [[np.zeros_like(p) for _ in range(state_count)] for p in ps]
    for t in range(1, steps + 1):
        grads = [rng.standard_normal(s) * 2.0 for s in SHAPES]
        for p, g in zip(params, grads):
            p.grad[...] = g
        opt.step()
        grads = ref.prepare_gradients(ps, grads, decoupled=cls is bn.AdamW, **prepare)
        for i, g in enumerate(grads):
            ps[i], *states[i] = reference_step(ps[i], g, *states[i], t, **hyper)
        for p, expected in zip(params, ps):
            assert_same(p.data, expected)


def _sgd(p, g, v, t, **kw):
    return ref.sgd_step(p, g, v, **kw)


def _rmsprop(p, g, s, buf, t, **kw):
    return ref.rmsprop_step(p, g, s, buf, **kw)


def _adam(p, g, m, v, t, betas=(0.9, 0.999), **kw):
    return ref.adam_step(p, g, m, v, t, beta1=betas[0], beta2=betas[1], **kw)


def _adamw(p, g, m, v, t, betas=(0.9, 0.999), **kw):
    return ref.adamw_step(p, g, m, v, t, beta1=betas[0], beta2=betas[1], **kw)


@pytest.mark.parametrize("kwargs", [
    {"lr": 0.1},
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    {"lr": 0.05, "momentum": 0.5, "weight_decay": 0.01},
    {"lr": 0.1, "clip_value": 0.5},
    {"lr": 0.1, "momentum": 0.9, "clip_norm": 1.0, "weight_decay": 0.1},
])
def test_sgd(kwargs):
    _trajectory(bn.SGD, kwargs, _sgd, 1)


@pytest.mark.parametrize("kwargs", [
    {"lr": 0.01},
    {"lr": 0.01, "alpha": 0.9, "eps": 1e-6, "momentum": 0.8},
    {"lr": 0.01, "weight_decay": 0.05, "clip_norm": 2.0},
])
def test_rmsprop(kwargs):
    _trajectory(bn.RMSprop, kwargs, _rmsprop, 2)


@pytest.mark.parametrize("kwargs", [
    {"lr": 0.01},
    {"lr": 0.003, "betas": (0.8, 0.95), "eps": 1e-4},
    {"lr": 0.01, "weight_decay": 0.05, "clip_value": 1.0},
    {"lr": 0.01, "clip_norm": 1.0},
])
def test_adam(kwargs):
    _trajectory(bn.Adam, kwargs, _adam, 2)


@pytest.mark.parametrize("kwargs", [
    {"lr": 0.01},
    {"lr": 0.02, "weight_decay": 0.1, "betas": (0.85, 0.99), "clip_norm": 1.5},
])
def test_adamw(kwargs):
    _trajectory(bn.AdamW, kwargs, _adamw, 2)


# Whole-model fast paths: skipped empty pixel columns, batches split across cores

def test_inference_skipping_empty_pixel_columns():
    # 512 uint8 images with empty borders: the first Dense drops the all-zero pixel columns.
    rng = np.random.default_rng(12)
    x = np.zeros((512, 8, 8), dtype=np.uint8)
    x[:, 2:6, 1:7] = rng.integers(0, 256, (512, 4, 6))
    model = bn.mlp(64, [16], 5, rng=0, dtype=np.float64)
    h = x.reshape(512, -1) / 255.0
    first, relu, last = model.layers
    h = ref.ACTIVATIONS["ReLU"][0](ref.dense_forward(h, first.W.data, first.b.data))
    expected = ref.dense_forward(h, last.W.data, last.b.data)
    # barenet scales pixels by float32(1/255), 1/255 to 1.2e-8 relative: hence 1e-6 here.
    np.testing.assert_allclose(model.logits(x), expected, rtol=1e-6, atol=1e-6)


def test_split_batch_gradients_equal_the_whole_batch():
    from barenet.parallel import SplitBatch, _controller
    if _controller()[0] is None:
        pytest.skip("split training needs threadpoolctl")
    rng = np.random.default_rng(13)
    # No conv bias: batch norm's mean subtraction cancels it, its gradient is rounding noise.
    model = bn.Sequential(bn.Conv2D(1, 3, 3, padding=1, bias=False, rng=0, dtype=np.float64),
                          bn.BatchNorm2d(3, dtype=np.float64), bn.ReLU(), bn.Flatten(),
                          bn.Dense(3 * 5 * 5, 4, rng=1, dtype=np.float64))
    conv, norm, _, _, dense = model.layers
    norm.gamma.data[:] = rng.uniform(0.5, 1.5, 3)
    x, labels = rng.standard_normal((10, 1, 5, 5)), rng.integers(0, 4, 10)
    with SplitBatch(model, parts=2) as split:
        loss, _, _ = split.step(x, labels, bn.softmax_cross_entropy)

    # The reference: one batch, forward and backward by hand.
    h1 = ref.conv2d_forward(x, conv.W.data, None, 1, 1)
    h2, cache = ref.batchnorm2d_forward(h1, norm.gamma.data, norm.beta.data, norm.eps)
    h3 = np.maximum(h2, 0.0)
    logits = ref.dense_forward(h3.reshape(10, -1), dense.W.data, dense.b.data)
    loss_ref, g = ref.softmax_cross_entropy(logits, labels)
    g, dW3, db3 = ref.dense_backward(g, h3.reshape(10, -1), dense.W.data)
    g = g.reshape(h3.shape) * (h2 > 0)
    g, dgamma, dbeta = ref.batchnorm2d_backward(g, cache)
    _, dW1, _ = ref.conv2d_backward(g, x, conv.W.data, 1, 1)

    assert loss == pytest.approx(loss_ref, rel=RTOL)
    for p, expected in zip(model.parameters(), [dW1, dgamma, dbeta, dW3, db3]):
        assert_same(p.grad, expected)
