"""Gradient checks (float64, centered differences) and dtype/buffer contracts for every layer."""

import warnings

import numpy as np
import pytest

import barenet as bn
from barenet.gradcheck import check_layer, check_model, relative_error


def away_from_kink(shape, rng):
    # ReLU-like layers: keep |x| >= 0.1 so a step of 1e-6 never crosses 0.
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.1, 0.1 * np.sign(x) + 0.1 * (x == 0), x)


LAYERS = [
    ("Dense", lambda: bn.Dense(5, 4, rng=0, dtype=np.float64)),
    ("Dense-no-bias", lambda: bn.Dense(5, 4, rng=1, dtype=np.float64, bias=False)),
    ("ReLU", bn.ReLU),
    ("LeakyReLU", lambda: bn.LeakyReLU(0.1)),
    ("Sigmoid", bn.Sigmoid),
    ("Tanh", bn.Tanh),
    ("GELU", bn.GELU),
    ("SiLU", bn.SiLU),
    ("Softmax", bn.Softmax),
    ("Flatten", bn.Flatten),
    ("BatchNorm1d", lambda: bn.BatchNorm1d(5, dtype=np.float64)),
]


@pytest.mark.parametrize("name,make", LAYERS, ids=[n for n, _ in LAYERS])
def test_gradient_check(name, make):
    rng = np.random.default_rng(42)
    layer = make()
    if isinstance(layer, bn.BatchNorm1d):
        # Non-trivial gamma/beta so their gradients are exercised.
        layer.gamma.data[:] = rng.uniform(0.5, 1.5, 5)
        layer.beta.data[:] = rng.standard_normal(5)
        # BatchNorm in train mode updates running stats each forward; they don't affect output.
    x = away_from_kink((6, 5), rng)
    errors = check_layer(layer, x, rng=rng)
    assert max(errors.values()) < 1e-6, errors


def test_dropout_gradient_with_fixed_mask():
    rng = np.random.default_rng(0)
    layer = bn.Dropout(0.5, rng=1)
    x = rng.standard_normal((4, 6))
    y = layer.forward(x)
    mask = layer._mask.copy()
    g = rng.standard_normal(y.shape)
    assert np.allclose(layer.backward(g), g * mask)
    # Each kept unit is scaled by 1/(1-p) = 2; dropped ones are exactly zero.
    assert set(np.unique(mask)) <= {0.0, 2.0}
    assert np.allclose(y, x * mask)


def test_dropout_off_in_eval_and_seeded():
    x = np.ones((100, 50), np.float32)
    a, b = bn.Dropout(0.3, rng=7), bn.Dropout(0.3, rng=7)
    assert np.array_equal(a.forward(x), b.forward(x))
    kept = np.mean(a.forward(x) > 0)
    assert 0.65 < kept < 0.75
    a.training = False
    assert a.forward(x) is x


def test_whole_network_gradient_check():
    rng = np.random.default_rng(3)
    model = bn.Sequential(bn.Dense(6, 5, rng=rng, dtype=np.float64), bn.Tanh(),
                          bn.Dense(5, 4, rng=rng, dtype=np.float64), bn.GELU(),
                          bn.Dense(4, 3, rng=rng, dtype=np.float64))
    x = rng.standard_normal((5, 6))
    labels = rng.integers(0, 3, 5)
    errors = check_model(model, bn.softmax_cross_entropy, x, labels)
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("name,make", LAYERS, ids=[n for n, _ in LAYERS])
def test_float32_in_float32_out(name, make):
    layer = make()
    if hasattr(layer, "W"):
        layer = type(layer)(5, 4, rng=0)                    # float32 default
    if isinstance(layer, bn.BatchNorm1d):
        layer = bn.BatchNorm1d(5)
    x = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    y = layer.forward(x)
    assert y.dtype == np.float32
    assert layer.backward(np.ones_like(y)).dtype == np.float32


def test_gradient_buffers_keep_identity():
    layer = bn.Dense(3, 2, rng=0)
    w_grad, b_grad = layer.W.grad, layer.b.grad
    x = np.ones((4, 3), np.float32)
    for _ in range(2):
        layer.backward(np.ones_like(layer.forward(x)))
    assert layer.W.grad is w_grad and layer.b.grad is b_grad
    # dL/dW = x^T g = 4 everywhere for x = 1, g = 1 over 4 rows.
    assert np.allclose(w_grad, 4.0) and np.allclose(b_grad, 4.0)


def test_extreme_inputs_are_finite_without_warnings():
    x = np.array([[-1e3, -50.0, 0.0, 50.0, 1e3]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for layer in (bn.Sigmoid(), bn.Tanh(), bn.GELU(), bn.SiLU(), bn.Softmax()):
            y = layer.forward(x)
            assert np.all(np.isfinite(y)), type(layer).__name__
            assert np.all(np.isfinite(layer.backward(np.ones_like(y))))
        s = bn.Sigmoid().forward(x)
        assert s[0, 0] == 0.0 and s[0, -1] == 1.0


def test_relative_error():
    a = np.array([1.0, 2.0])
    assert relative_error(a, a) == 0.0
    assert relative_error(a, a * 1.01) == pytest.approx(0.01 / 2.01, rel=1e-6)


def test_batchnorm_eval_uses_running_stats():
    rng = np.random.default_rng(0)
    layer = bn.BatchNorm1d(3, momentum=1.0)
    x = (rng.standard_normal((50, 3)) * 2 + 5).astype(np.float32)
    layer.forward(x)
    # momentum 1: running stats are exactly this batch's mean and unbiased variance.
    assert np.allclose(layer.running_mean, x.mean(0), atol=1e-5)
    assert np.allclose(layer.running_var, x.var(0, ddof=1), rtol=1e-4)
    layer.training = False
    y = layer.forward(x)
    assert np.allclose(y.mean(0), 0, atol=1e-4)


def test_batchnorm1d_eval_mode_gradient_check():
    rng = np.random.default_rng(5)
    layer = bn.BatchNorm1d(4, dtype=np.float64)
    layer.forward(rng.standard_normal((20, 4)) * 3 + 1)      # non-trivial running stats
    layer.training = False
    errors = check_layer(layer, rng.standard_normal((6, 4)), rng=rng)
    assert max(errors.values()) < 1e-6, errors
