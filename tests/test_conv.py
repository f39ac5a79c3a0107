"""Conv layers: float64 gradient checks (stride/padding variants), known values, dtypes."""

import numpy as np
import pytest

from barenet.conv import BatchNorm2d, Conv2D, Dropout2d
from barenet.gradcheck import check_layer
from barenet.layers import Dense, Flatten, ReLU
from barenet.losses import softmax_cross_entropy
from barenet.model import Sequential
from barenet.pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from barenet.registry import LAYERS


def distinct(shape, rng):
    """Values with no ties and gaps of 0.1: a step of 1e-6 never changes a max's winner."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) / 10.0


CONVS = [  # (C_in, C_out, kernel, stride, padding, H, W)
    (1, 2, 3, 1, 0, 5, 5),
    (3, 4, 3, 1, 1, 6, 7),
    (2, 3, 3, 2, 0, 7, 7),
    (2, 3, 3, 2, 1, 6, 8),
    (3, 2, 5, 1, 2, 6, 6),
    (2, 2, (3, 2), (2, 1), (1, 0), 7, 5),
    (2, 3, 1, 1, 0, 4, 4),
    (1, 3, 3, 2, 1, 7, 6),          # one input channel takes its own im2col path
    (1, 2, (2, 3), (1, 2), (2, 1), 5, 6),
]


@pytest.mark.parametrize("c_in,c_out,k,s,p,h,w", CONVS)
def test_conv_gradient_check(c_in, c_out, k, s, p, h, w):
    rng = np.random.default_rng(0)
    layer = Conv2D(c_in, c_out, k, stride=s, padding=p, rng=1, dtype=np.float64)
    layer.b.data[:] = rng.standard_normal(c_out)
    errors = check_layer(layer, rng.standard_normal((2, c_in, h, w)), rng=rng)
    assert max(errors.values()) < 1e-6, errors


def test_conv_without_bias_gradient_check():
    rng = np.random.default_rng(3)
    layer = Conv2D(2, 3, 3, padding=1, bias=False, rng=0, dtype=np.float64)
    assert [p.name for p in layer.parameters()] == ["W"]
    errors = check_layer(layer, rng.standard_normal((2, 2, 5, 5)), rng=rng)
    assert max(errors.values()) < 1e-6, errors


POOLS = [(2, None, 0, 6, 6), (2, None, 0, 7, 5), (3, 2, 1, 7, 8), (3, 1, 0, 5, 6), (2, 1, 1, 4, 4)]


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("k,s,p,h,w", POOLS)
def test_pool_gradient_check(cls, k, s, p, h, w):
    rng = np.random.default_rng(1)
    errors = check_layer(cls(k, s, p), distinct((2, 3, h, w), rng), rng=rng)
    assert max(errors.values()) < 1e-6, errors


def test_global_avg_pool_and_batchnorm2d_gradient_check():
    rng = np.random.default_rng(2)
    errors = check_layer(GlobalAvgPool2D(), rng.standard_normal((3, 4, 5, 2)), rng=rng)
    assert errors["input"] < 1e-6
    bn = BatchNorm2d(3, dtype=np.float64)          # train mode: batch statistics
    bn.gamma.data[:] = rng.uniform(0.5, 1.5, 3)
    bn.beta.data[:] = rng.standard_normal(3)
    errors = check_layer(bn, rng.standard_normal((4, 3, 3, 5)) * 2.0 + 1.0, rng=rng)
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("c_in", [2, 1])     # 1: the one-channel im2col path
def test_conv_matches_direct_sum(c_in):
    # y[n, o, i, j] = b[o] + sum_{c, u, v} W[o, c, u, v] * xp[n, c, s*i + u, s*j + v]
    rng = np.random.default_rng(4)
    layer = Conv2D(c_in, 3, 3, stride=2, padding=1, rng=0, dtype=np.float64)
    layer.b.data[:] = [0.5, -1.0, 2.0]
    x = rng.standard_normal((2, c_in, 5, 6))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.zeros((2, 3, 3, 3))
    for i in range(3):
        for j in range(3):
            patch = xp[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
            expected[:, :, i, j] = np.einsum("ncuv,ocuv->no", patch, layer.W.data) + layer.b.data
    assert np.allclose(layer.forward(x), expected)


def test_pool_known_values():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    assert MaxPool2D(2).forward(x)[0, 0].tolist() == [[5, 7], [13, 15]]
    # mean of [0, 1, 4, 5] = 2.5, of [2, 3, 6, 7] = 4.5, ...
    assert AvgPool2D(2).forward(x)[0, 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]
    assert GlobalAvgPool2D().forward(x).tolist() == [[7.5]]
    pool = MaxPool2D(2)
    pool.forward(np.ones((1, 1, 2, 2), np.float32))             # a four-way tie
    grad = pool.backward(np.ones((1, 1, 1, 1), np.float32))
    assert grad[0, 0].tolist() == [[1, 0], [0, 0]]               # one winner, the first


@pytest.mark.parametrize("make", [
    lambda: Conv2D(3, 4, 3, padding=1, rng=0), lambda: MaxPool2D(2), lambda: AvgPool2D(3, 2, 1),
    GlobalAvgPool2D, lambda: BatchNorm2d(3), lambda: Dropout2d(0.5, rng=0)])
def test_float32_in_float32_out(make):
    layer = make()
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    y = layer.forward(x)
    assert y.dtype == np.float32
    assert layer.backward(np.ones_like(y)).dtype == np.float32
    for p in layer.parameters():
        assert p.grad.dtype == np.float32


def test_gradient_buffers_keep_identity():
    layer = Conv2D(1, 2, 3, rng=0)
    ids = [id(p.grad) for p in layer.parameters()]
    x = np.ones((2, 1, 5, 5), np.float32)
    for _ in range(2):
        layer.backward(np.ones_like(layer.forward(x)))
    assert [id(p.grad) for p in layer.parameters()] == ids


def test_batchnorm2d_eval_uses_running_stats():
    rng = np.random.default_rng(5)
    bn = BatchNorm2d(2, momentum=1.0)                            # running stats = last batch
    x = (rng.standard_normal((8, 2, 4, 4)) * 3.0 + 2.0).astype(np.float32)
    y_train = bn.forward(x)
    assert np.allclose(y_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    bn.training = False
    n = 8 * 4 * 4                                                # unbiased -> biased variance
    bn.running_var *= (n - 1) / n
    y_eval = bn.forward(x)
    assert y_eval.dtype == np.float32
    assert np.allclose(y_eval, y_train, atol=1e-4)


def test_dropout2d_drops_whole_channels():
    layer = Dropout2d(0.5, rng=0)
    y = layer.forward(np.ones((16, 8, 3, 3), np.float32))
    per_channel = y.reshape(16, 8, 9)
    assert np.all(per_channel.min(axis=2) == per_channel.max(axis=2))   # constant per channel
    assert set(np.unique(y)) <= {0.0, 2.0}
    layer.training = False
    assert layer.forward(np.ones((2, 2, 2, 2), np.float32)).min() == 1.0


def test_eval_forward_in_chunks_matches_training_forward():
    import barenet.conv as conv
    layer = Conv2D(1, 3, 3, padding=1, rng=0)
    x = np.random.default_rng(6).random((conv.EVAL_CHUNK + 7, 1, 6, 6), dtype=np.float32)
    y_train = np.array(layer.forward(x))
    layer.training = False
    assert np.allclose(layer.forward(x), y_train, atol=1e-6)


def test_registered_and_rebuilt_from_architecture():
    for name in ("Conv2D", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "BatchNorm2d",
                 "Dropout2d"):
        assert name in LAYERS
    model = Sequential(Conv2D(1, 4, 3, padding=1, rng=0), BatchNorm2d(4), ReLU(), MaxPool2D(2),
                       Conv2D(4, 4, (3, 2), stride=(1, 2), rng=0), GlobalAvgPool2D(),
                       Dense(4, 10, rng=0))
    rebuilt = Sequential.from_architecture(model.architecture(), rng=1)
    assert rebuilt.architecture() == model.architecture()
    rebuilt.load_state_arrays(model.state_arrays())
    x = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)   # (N, 28, 28) input
    assert np.allclose(rebuilt.eval().forward(x), model.eval().forward(x))
    # Flat rows of a square image, as a CSV or an MLP pipeline hands them over, work too.
    assert np.array_equal(model.forward(x.reshape(3, 784)), model.forward(x))


def test_small_cnn_learns_synthetic_digits():
    from barenet.optim import SGD
    from barenet.training import evaluate, fit
    from conftest import synthetic_digits

    (x, y), (x_test, y_test) = synthetic_digits(300, 100)
    model = Sequential(Conv2D(1, 4, 5, stride=2, rng=0), ReLU(), MaxPool2D(2), Flatten(),
                       Dense(4 * 6 * 6, 10, rng=0))
    fit(model, softmax_cross_entropy, SGD(model.parameters(), 0.05, momentum=0.9), x, y,
        epochs=3, batch_size=32, rng=0)
    assert evaluate(model, x_test, y_test)["accuracy"] > 0.9


@pytest.mark.parametrize("k", [2, 3])
def test_max_pool_gradient_goes_to_the_first_maximum_on_ties(k):
    rng = np.random.default_rng(k)
    x = rng.integers(0, 3, (4, 3, 2 * k, 3 * k)).astype(np.float32)   # many ties
    pool = MaxPool2D(k)
    pool.forward(x)
    g = rng.standard_normal((4, 3, 2, 3)).astype(np.float32)
    expected = np.zeros_like(x)
    for n, c, r, col in np.ndindex(*g.shape):
        window = x[n, c, r * k:(r + 1) * k, col * k:(col + 1) * k]
        i, j = np.unravel_index(np.argmax(window), window.shape)      # first in row-major
        expected[n, c, r * k + i, col * k + j] = g[n, c, r, col]
    np.testing.assert_array_equal(pool.backward(g), expected)


@pytest.mark.parametrize("pool", [lambda: MaxPool2D(2), lambda: MaxPool2D(3, 2, 1)])
def test_relu_before_a_max_pool_runs_after_it_with_the_same_numbers(pool):
    # Sequential runs the pool first (a quarter of the values for the ReLU); forward and
    # backward must equal the layers run in their declared order, ties and all.
    rng = np.random.default_rng(3)
    x = rng.integers(-2, 3, (5, 2, 8, 8)).astype(np.float64)          # ties, zeros, negatives
    identity = Conv2D(2, 2, 1, bias=False, dtype=np.float64)        # a 4-D first layer
    identity.W.data[...] = np.eye(2)[:, :, None, None]
    model = Sequential(identity, ReLU(), pool(), ReLU(), pool(), Flatten())
    assert [type(layer) for layer in model.run_order()][1:5] == [MaxPool2D, ReLU] * 2
    out = model.forward(x)
    g = rng.standard_normal(out.shape)
    dx = model.backward(g, input_grad=True)

    layers = [identity, ReLU(), pool(), ReLU(), pool(), Flatten()]
    expected = x
    for layer in layers:
        expected = layer.forward(expected)
    grad = g
    for layer in reversed(layers):
        grad = layer.backward(grad)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(dx, grad)
