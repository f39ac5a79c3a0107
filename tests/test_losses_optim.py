"""Losses (known values, gradient checks) and one known step of every optimizer and schedule."""

import math
import warnings

import numpy as np
import pytest

import barenet as bn
from barenet.gradcheck import numerical_gradient, relative_error
from barenet.layers import Parameter


def test_softmax_cross_entropy_known_values():
    # Row 0: logits (0, 0, 0), label 0 -> loss log 3.
    # Row 1: (ln 1, ln 2, ln 1) -> p = (1/4, 1/2, 1/4),
    # label 1 -> loss log 2. Mean = (log 3 + log 2) / 2 = log(6) / 2.
    logits = np.array([[0.0, 0.0, 0.0], [0.0, math.log(2.0), 0.0]])
    loss, grad = bn.softmax_cross_entropy(logits, np.array([0, 1]))
    assert loss == pytest.approx(math.log(6.0) / 2)
    # grad = (p - onehot) / N
    expected = np.array([[1 / 3 - 1, 1 / 3, 1 / 3], [0.25, 0.5 - 1, 0.25]]) / 2
    assert np.allclose(grad, expected)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_cross_entropy_gradient_check(smoothing):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 5))
    labels = rng.integers(0, 5, 4)
    _, grad = bn.softmax_cross_entropy(logits, labels, label_smoothing=smoothing)
    numeric = numerical_gradient(
        lambda: bn.softmax_cross_entropy(logits, labels, label_smoothing=smoothing)[0], logits)
    assert relative_error(grad, numeric) < 1e-6


def test_mse_gradient_check_and_value():
    rng = np.random.default_rng(1)
    out = rng.standard_normal((3, 4))
    labels = np.array([0, 3, 1])
    loss, grad = bn.mean_squared_error(out, labels)
    target = np.eye(4)[labels]
    assert loss == pytest.approx(np.mean((out - target) ** 2))
    numeric = numerical_gradient(lambda: bn.mean_squared_error(out, labels)[0], out)
    assert relative_error(grad, numeric) < 1e-6


def test_cross_entropy_extreme_logits_finite():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grad = bn.softmax_cross_entropy(logits, np.array([1, 1]))
    assert math.isfinite(loss) and loss == pytest.approx(1e4, rel=1e-3)
    assert np.all(np.isfinite(grad)) and grad.dtype == np.float32


def one_param(value, grad):
    p = Parameter(np.array(value, np.float32))
    p.grad[...] = grad
    return p


def test_sgd_plain_and_momentum_steps():
    p = one_param([1.0, 2.0], [0.5, -1.0])
    opt = bn.SGD([p], lr=0.1)
    opt.step()                                   # p - 0.1 g
    assert np.allclose(p.data, [0.95, 2.1])
    p = one_param([1.0], [1.0])
    opt = bn.SGD([p], lr=0.1, momentum=0.9)
    opt.step()                                   # v = 1, p = 1 - 0.1
    p.grad[...] = 1.0
    opt.step()                                   # v = 0.9 + 1 = 1.9, p = 0.9 - 0.19
    assert np.allclose(p.data, [0.71])


def test_sgd_nesterov_and_weight_decay():
    p = one_param([1.0], [1.0])
    opt = bn.SGD([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.5)
    opt.step()            # g = 1 + 0.5 * 1 = 1.5; v = 1.5; step = g + 0.9 v = 2.85; p = 1 - 0.285
    assert np.allclose(p.data, [0.715])


def test_rmsprop_step():
    p = one_param([1.0], [2.0])
    opt = bn.RMSprop([p], lr=0.01, alpha=0.9, eps=0.0)
    opt.step()            # s = 0.1 * 4 = 0.4; p = 1 - 0.01 * 2 / sqrt(0.4)
    assert np.allclose(p.data, [1 - 0.02 / math.sqrt(0.4)])


def test_adam_first_step_is_lr_times_sign():
    p = one_param([1.0, -1.0], [3.0, -0.001])
    opt = bn.Adam([p], lr=0.1, eps=0.0)
    opt.step()            # bias-corrected m / sqrt(v) = g / |g| on step 1
    assert np.allclose(p.data, [0.9, -0.9])


def test_adam_two_steps_match_formula():
    p = one_param([0.5], [1.0])
    opt = bn.Adam([p], lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    opt.step()
    p.grad[...] = -2.0
    opt.step()
    m = 0.9 * 0.1 * 1.0 + 0.1 * -2.0                 # = -0.11
    v = 0.999 * 0.001 * 1.0 + 0.001 * 4.0            # = 0.004999
    mhat, vhat = m / (1 - 0.9 ** 2), v / (1 - 0.999 ** 2)
    expected = 0.5 - 0.01 - 0.01 * mhat / (math.sqrt(vhat) + 1e-8)
    assert p.data[0] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("cls", [bn.Adam, bn.AdamW])
def test_adam_at_learning_rate_zero_moves_moments_not_weights(cls):
    """A warm-up's first batch has lr 0 (configs/mlp-best-fashion.toml crashed there)."""
    p = one_param([0.5], [1.0])
    opt = cls([p], lr=0.01)
    opt.lr = 0.0
    opt.step()
    assert p.data[0] == 0.5 and opt.exp_avg[0] == pytest.approx(0.1)
    opt.lr = 0.01
    opt.step()                                        # bias correction counts both steps
    assert np.isfinite(p.data[0]) and p.data[0] < 0.5


def test_adamw_decoupled_decay():
    p = one_param([2.0], [0.0])
    opt = bn.AdamW([p], lr=0.1, weight_decay=0.5)
    opt.step()            # zero gradient: only p *= 1 - 0.1 * 0.5
    assert np.allclose(p.data, [1.9])


def test_clipping_by_value_and_norm():
    p = one_param([0.0, 0.0], [10.0, -0.5])
    bn.SGD([p], lr=1.0, clip_value=5.0).step()
    assert np.allclose(p.data, [-5.0, 0.5])
    p = one_param([0.0, 0.0], [3.0, 4.0])        # norm 5 -> scaled to norm 1
    bn.SGD([p], lr=1.0, clip_norm=1.0).step()
    assert np.allclose(p.data, [-0.6, -0.8], atol=1e-6)


def test_optimizer_uses_flat_views_and_keeps_float32():
    a, b = one_param([1.0, 2.0], [1.0, 1.0]), one_param([[3.0]], [[1.0]])
    opt = bn.Adam([a, b], lr=0.1)
    assert opt.data.size == 3 and np.shares_memory(a.data, opt.data)
    opt.step()
    assert a.data.dtype == np.float32 and opt.data.dtype == np.float32


def test_invalid_hyperparameters_rejected():
    p = one_param([1.0], [1.0])
    with pytest.raises(ValueError, match="learning rate"):
        bn.SGD([p], lr=0.0)
    with pytest.raises(ValueError, match="nesterov"):
        bn.SGD([p], lr=0.1, nesterov=True)


def test_schedules():
    step = bn.StepDecay([30, 50, 65], 0.1)
    assert [step.factor(t) for t in (0, 29.9, 30, 50, 70)] == pytest.approx(
        [1, 1, 0.1, 0.01, 0.001])
    assert bn.ExponentialDecay(0.5).factor(3.7) == 0.125
    cos = bn.CosineWarmup(10, warmup=2)
    assert cos.factor(1) == pytest.approx(0.5)          # half-way through warm-up
    assert cos.factor(2) == pytest.approx(1.0)
    assert cos.factor(6) == pytest.approx(0.5)          # half-way through the cosine
    assert cos.factor(10) == pytest.approx(0.0)
    one = bn.OneCycle(10, pct_start=0.3, div=25, final_div=1e4)
    assert one.factor(0) == pytest.approx(1 / 25)
    assert one.factor(3) == pytest.approx(1.0)
    assert one.factor(10) == pytest.approx(1e-4)


def test_reduce_on_plateau():
    plateau = bn.ReduceOnPlateau(factor=0.5, patience=1)
    scales = [plateau.update(v, 0.1) for v in (1.0, 0.9, 0.95, 0.95, 0.95)]
    # improve, improve, bad 1 (<= patience), bad 2 -> halve, bad 1
    assert scales == [1.0, 1.0, 1.0, 0.5, 0.5]
