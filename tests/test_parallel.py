"""Row-parallel inference: same numbers as one serial pass, only for models that allow it."""

import numpy as np
import pytest

import barenet as bn
from barenet import parallel
from barenet.conv import BatchNorm2d, Conv2D
from barenet.pooling import MaxPool2D


def mlp(rng=0):
    return bn.Sequential(bn.Dense(784, 64, rng=rng), bn.BatchNorm1d(64), bn.GELU(),
                         bn.Dropout(0.3), bn.Dense(64, 32, rng=rng), bn.Tanh(),
                         bn.Dense(32, 10, rng=rng))


def images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def force_threads(monkeypatch, n):
    """Split even on a one-core runner or under OPENBLAS_NUM_THREADS=1."""
    controller = parallel._threadpool_controller()
    if controller is None:
        pytest.skip("threadpoolctl is not installed: run_rows always runs serially")
    monkeypatch.setattr(parallel, "_controller", lambda: (controller, n))


def test_run_rows_matches_one_call_whatever_the_split(monkeypatch):
    x = np.random.default_rng(1).normal(size=(5000, 7)).astype(np.float32)
    w = np.random.default_rng(2).normal(size=(7, 3)).astype(np.float32)

    def fn(rows):
        return np.tanh(rows @ w)

    expected = fn(x)
    force_threads(monkeypatch, 4)
    assert parallel.threads_for(len(x)) == 4
    np.testing.assert_allclose(parallel.run_rows(fn, x), expected, rtol=1e-6, atol=1e-6)
    assert parallel.run_rows(fn, x[:10]).shape == (10, 3)          # too small: one call


def test_mlp_predictions_equal_the_serial_forward_pass(monkeypatch):
    force_threads(monkeypatch, 2)
    model = mlp()
    model.eval()
    x = images(4096)
    serial = model.forward(bn.model.as_input(x))
    assert all(layer.row_parallel for layer in model.layers)
    np.testing.assert_allclose(model.logits(x), serial, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(model.predict(x), model.predict_proba(x).argmax(axis=1))
    assert model.training is False


def test_predict_restores_train_mode_and_handles_empty_input():
    model = mlp()
    assert model.predict(images(0)).shape == (0,)
    assert model.predict_proba(images(3)).shape == (3, 10)
    assert model.training is True


def test_feature_map_models_run_in_chunks_with_one_model_copy_per_thread(monkeypatch):
    cnn = bn.Sequential(Conv2D(1, 4, 3, rng=0), BatchNorm2d(4), bn.ReLU(), MaxPool2D(2),
                        bn.Flatten(), bn.Dense(4 * 13 * 13, 10, rng=0))
    assert not all(layer.row_parallel for layer in cnn.layers)
    norm = cnn.layers[1]            # statistics away from 0/1: the copies must carry them
    norm.running_mean[:], norm.running_var[:] = [0.1, -0.2, 0.3, 0.0], [0.5, 2.0, 1.0, 1.5]
    copies = []
    real_copy = parallel._eval_copy
    monkeypatch.setattr(parallel, "_eval_copy", lambda m: copies.append(real_copy(m)) or copies[-1])
    force_threads(monkeypatch, 2)
    x = images(2048 + 13)
    cnn.eval()
    np.testing.assert_allclose(cnn.logits(x), cnn.forward(bn.model.as_input(x)), atol=1e-5)
    assert len(copies) == 1 and copies[0].layers[0] is not cnn.layers[0]
    assert cnn.logits(x[:5]).shape == (5, 10)                      # one chunk: no copy


def test_a_callers_blas_limit_keeps_inference_in_its_thread():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        assert parallel.threads_for(100_000) == 1


def test_predict_still_works_in_a_forked_child(monkeypatch):
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    force_threads(monkeypatch, 2)
    model = mlp().eval()
    x = images(4096)
    expected = model.predict(x)                 # the parent's pool exists from here on
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=lambda: queue.put(model.predict(x).tolist()))
    child.start()
    child.join(timeout=60)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung, "predict hung in a forked child"
    assert queue.get(timeout=5) == expected.tolist()


def one_cpu_twice():
    """Two 'CPUs' that are the same allowed one: the split runs even on a one-CPU runner."""
    import os

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    return [min(os.sched_getaffinity(0))] * 2


def small_cnn(dtype=np.float64):
    from barenet.conv import Conv2D as C
    from barenet.pooling import MaxPool2D as P

    return bn.Sequential(C(1, 3, 3, rng=0, dtype=dtype), bn.ReLU(), P(2),
                         bn.Flatten(), bn.Dense(3 * 13 * 13, 10, rng=1, dtype=dtype),
                         bn.Dropout(0.0))


def dropout_cnn_and_sgd():
    model = small_cnn(np.float32)
    model.layers[-1] = bn.Dropout(0.3, rng=5)
    return model, bn.SGD(model.parameters(), lr=0.05, momentum=0.9)


def test_split_batch_gradients_equal_the_whole_batch(monkeypatch):
    force_threads(monkeypatch, 2)
    monkeypatch.setattr(parallel, "_cpus", one_cpu_twice)    # pinning works on one CPU too
    model = small_cnn()
    x = np.random.default_rng(0).random((96, 1, 28, 28))
    y = np.random.default_rng(1).integers(0, 10, 96)
    logits = model.forward(x)
    full_loss, grad = bn.softmax_cross_entropy(logits, y)
    model.backward(grad)
    expected = [p.grad.copy() for p in model.parameters()]
    for p in model.parameters():
        p.grad[...] = 0
    with parallel.SplitBatch(model) as split:
        loss, correct, finite = split.step(x, y, bn.softmax_cross_entropy)
    assert finite and loss == pytest.approx(full_loss, rel=1e-12)
    assert correct == int(np.count_nonzero(logits.argmax(axis=1) == y))
    for p, g in zip(model.parameters(), expected):
        np.testing.assert_allclose(p.grad, g, rtol=1e-10, atol=1e-12)


def test_fit_splits_conv_models_only_and_reproducibly(monkeypatch):
    force_threads(monkeypatch, 2)
    monkeypatch.setattr(parallel, "_cpus", one_cpu_twice)
    assert parallel.can_split_training(small_cnn())
    assert not parallel.can_split_training(mlp())                     # GEMM-bound: BLAS
    x = images(256)
    y = np.random.default_rng(2).integers(0, 10, 256)

    def run():
        model, opt = dropout_cnn_and_sgd()
        history = bn.fit(model, bn.softmax_cross_entropy, opt, x, y, epochs=2,
                         batch_size=128, rng=0)
        return history.rows[-1]["loss"], [p.data.copy() for p in model.parameters()]

    (loss_a, w_a), (loss_b, w_b) = run(), run()
    assert loss_a == loss_b and all(np.array_equal(a, b) for a, b in zip(w_a, w_b))


def test_split_training_continues_exactly_across_fit_calls(monkeypatch):
    """What --resume relies on: nothing but the model's own state carries between batches."""
    force_threads(monkeypatch, 2)
    monkeypatch.setattr(parallel, "_cpus", one_cpu_twice)
    from barenet.training import History, TrainState

    x = images(256)
    y = np.random.default_rng(3).integers(0, 10, 256)

    def fresh():
        model, opt = dropout_cnn_and_sgd()
        return model, opt, TrainState(model, opt, np.random.default_rng(0), History())

    model_a, opt_a, state_a = fresh()
    bn.fit(model_a, bn.softmax_cross_entropy, opt_a, x, y, epochs=2, batch_size=128,
           state=state_a)
    model_b, opt_b, state_b = fresh()
    bn.fit(model_b, bn.softmax_cross_entropy, opt_b, x, y, epochs=1, batch_size=128,
           state=state_b)
    bn.fit(model_b, bn.softmax_cross_entropy, opt_b, x, y, epochs=2, batch_size=128,
           state=state_b)
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        assert np.array_equal(a.data, b.data)


def cpus(k):
    """k 'CPUs' that are all the one this process may use: k parts even on a one-CPU runner."""
    import os

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    return lambda: [min(os.sched_getaffinity(0))] * k


def bn_cnn(dtype=np.float64):
    """Conv, batch norm over maps, pooling, dense, batch norm over features: both BN kinds."""
    return bn.Sequential(Conv2D(1, 4, 3, rng=0, dtype=dtype), BatchNorm2d(4, dtype=dtype),
                         bn.ReLU(), MaxPool2D(2), bn.Flatten(),
                         bn.Dense(4 * 13 * 13, 16, rng=1, dtype=dtype),
                         bn.BatchNorm1d(16, dtype=dtype), bn.Tanh(),
                         bn.Dense(16, 10, rng=2, dtype=dtype))


@pytest.mark.parametrize("parts", [2, 3, 4, 8])
def test_batch_norm_split_across_cores_equals_the_whole_batch(monkeypatch, parts):
    """Statistics, running averages and every gradient as if the batch were not split."""
    force_threads(monkeypatch, parts)
    monkeypatch.setattr(parallel, "_cpus", cpus(parts))
    x = np.random.default_rng(0).random((101, 1, 28, 28))          # odd: unequal parts
    y = np.random.default_rng(1).integers(0, 10, 101)
    whole = bn_cnn()
    full_loss, grad = bn.softmax_cross_entropy(whole.forward(x), y)
    whole.backward(grad)
    split_model = bn_cnn()
    with parallel.SplitBatch(split_model, parts) as split:
        loss, _, finite = split.step(x, y, bn.softmax_cross_entropy)
    assert finite and loss == pytest.approx(full_loss, rel=1e-12)
    for p, q in zip(split_model.parameters(), whole.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-9, atol=1e-12)
    for a, b in zip(split_model.layers, whole.layers):
        for name, buffer in a.buffers().items():
            np.testing.assert_allclose(buffer, b.buffers()[name], rtol=1e-12, atol=1e-15)
    for layer in split_model.layers:            # the exchange ends with the step
        assert getattr(layer, "batch_sums", None) is None


@pytest.mark.parametrize("processes", [True, False])
def test_a_failing_part_raises_its_error_instead_of_hanging(monkeypatch, processes):
    force_threads(monkeypatch, 2)
    monkeypatch.setattr(parallel, "_cpus", cpus(2))
    model = bn_cnn()
    split = parallel.SplitBatch(model, 2, processes=processes and parallel.workers.available())

    def broken(x):
        raise RuntimeError("part 1 failed")

    split.replicas[0].layers[-1].forward = broken       # after both batch norms' exchanges
    x = np.random.default_rng(0).random((64, 1, 28, 28))
    y = np.zeros(64, dtype=np.int64)
    with split, pytest.raises(RuntimeError, match="part 1 failed"):
        split.step(x, y, bn.softmax_cross_entropy)


def test_parts_follow_the_cpus_blas_threads_and_batch(monkeypatch):
    force_threads(monkeypatch, 8)
    monkeypatch.setattr(parallel, "_cpus", cpus(8))
    assert parallel.training_parts(bn_cnn(), 128) == 4               # 32 images per part
    assert parallel.training_parts(bn_cnn(), 512) == 8
    assert parallel.training_parts(bn_cnn(), 40) == 1
    assert parallel.training_parts(mlp(), 512) == 1                  # BLAS spreads GEMMs
    monkeypatch.setattr(parallel, "_cpus", cpus(1))
    assert parallel.training_parts(bn_cnn(), 512) == 1
    force_threads(monkeypatch, 1)                                     # OPENBLAS_NUM_THREADS=1
    monkeypatch.setattr(parallel, "_cpus", cpus(8))
    assert parallel.training_parts(bn_cnn(), 512) == 1


@pytest.mark.parametrize("parts", [1, 2, 4])
def test_fit_trains_batch_norm_cnns_split_reproducibly(monkeypatch, parts):
    """Whole epochs, a last batch too small to split, and the same numbers twice."""
    force_threads(monkeypatch, parts)
    monkeypatch.setattr(parallel, "_cpus", cpus(parts))
    x = images(300)                                     # batches 128, 128, 44
    y = np.random.default_rng(2).integers(0, 10, 300)

    def run():
        model = bn_cnn(np.float32)
        model.layers.insert(-1, bn.Dropout(0.3, rng=4))
        opt = bn.SGD(model.parameters(), lr=0.05, momentum=0.9)
        history = bn.fit(model, bn.softmax_cross_entropy, opt, x, y, epochs=2,
                         batch_size=128, rng=0)
        return history.rows[-1]["loss"], [p.data.copy() for p in model.parameters()]

    (loss_a, w_a), (loss_b, w_b) = run(), run()
    assert np.isfinite(loss_a)
    assert loss_a == loss_b and all(np.array_equal(a, b) for a, b in zip(w_a, w_b))
