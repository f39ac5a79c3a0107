"""train_step, the batch helper and the one rule for uint8 input (issue 16, items 1 and 6)."""

import numpy as np
import pytest

import barenet as bn
from barenet.training import Batches, train_step


def tiny(seed=0):
    return bn.mlp(6, [5], 3, rng=seed)


def test_train_step_is_forward_loss_backward_update():
    x = np.random.default_rng(0).random((8, 6), dtype=np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    by_hand, stepped = tiny(), tiny()
    logits = by_hand.forward(x)
    loss, grad = bn.softmax_cross_entropy(logits, y)
    by_hand.backward(grad)
    bn.SGD(by_hand.parameters(), lr=0.1).step()
    value, correct = train_step(stepped, bn.softmax_cross_entropy,
                                bn.SGD(stepped.parameters(), lr=0.1), x, y)
    assert value == loss
    assert correct == int((logits.argmax(axis=1) == y).sum())
    for a, b in zip(by_hand.parameters(), stepped.parameters()):
        assert np.array_equal(a.data, b.data)


def test_train_step_leaves_the_weights_on_a_non_finite_loss():
    model = tiny()
    before = [p.data.copy() for p in model.parameters()]
    x = np.full((4, 6), np.nan, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        value, _ = train_step(model, bn.softmax_cross_entropy,
                              bn.SGD(model.parameters(), lr=0.1), x, np.zeros(4, int))
    assert not np.isfinite(value)
    assert all(np.array_equal(p.data, b) for p, b in zip(model.parameters(), before))


def test_batches_shuffle_indices_and_scale_uint8_like_as_input():
    x = np.random.default_rng(1).integers(0, 256, (10, 2, 3), dtype=np.uint8)
    y = np.arange(10)
    batches = Batches(x, y, 4)
    assert len(batches) == 3
    seen = []
    for xb, yb in batches.shuffled(np.random.default_rng(0)):
        assert xb.dtype == np.float32 and len(xb) == len(yb)
        assert np.array_equal(xb, bn.Sequential.as_input(x[yb]))     # bit for bit
        seen.extend(yb.tolist())
    assert sorted(seen) == list(range(10)) and seen != list(range(10))


def test_uint8_input_means_the_same_to_forward_call_and_predict_proba():
    model = bn.mlp(12, [8], 3, rng=2).eval()
    x = np.random.default_rng(3).integers(0, 256, (5, 3, 4), dtype=np.uint8)
    scaled = x.astype(np.float32) / np.float32(255)
    out = model.forward(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, model.forward(scaled), rtol=1e-6, atol=1e-6)
    assert np.array_equal(model(x), out)
    np.testing.assert_allclose(model.predict_proba(x), bn.layers.softmax(out), rtol=1e-6)
    assert np.array_equal(model.forward(x), model.forward(bn.Sequential.as_input(x)))


def test_forward_keeps_float64_inputs_in_float64():
    model = bn.mlp(4, [3], 2, rng=0, dtype=np.float64)
    assert model.forward(np.ones((2, 4))).dtype == np.float64


@pytest.mark.parametrize("n", [10, 100])
def test_split_train_step_takes_small_batches_whole(monkeypatch, n):
    from barenet import parallel
    calls = []

    def whole(*args):
        calls.append(len(args[3]))
        return 0.0, 0

    split = parallel.SplitBatch(tiny(), 2, whole_step=whole)
    monkeypatch.setattr(split, "step", lambda x, y, loss: (1.0, 2, True))
    opt = bn.SGD(split.model.parameters(), lr=0.1)
    x = np.zeros((n, 6), np.float32)
    result = split.train_step(split.model, bn.softmax_cross_entropy, opt, x, np.zeros(n, int))
    assert result == ((0.0, 0) if n < parallel.MIN_SPLIT_BATCH else (1.0, 2))
    assert calls == ([n] if n < parallel.MIN_SPLIT_BATCH else [])
