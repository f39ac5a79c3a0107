"""Split-batch training in worker processes (workers.py): the numbers of the thread version,
bit for bit, and no hang, orphan process or inherited file when something goes wrong."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import barenet as bn
from barenet import parallel, workers
from barenet.conv import BatchNorm2d, Conv2D
from barenet.pooling import MaxPool2D

pytestmark = pytest.mark.skipif(not workers.available(),
                                reason="worker processes need fork() and Linux")


def two_parts(monkeypatch, parts=2):
    """K parts even on a one-CPU runner or under OPENBLAS_NUM_THREADS=1."""
    controller = parallel._threadpool_controller()
    if controller is None:
        pytest.skip("threadpoolctl is not installed: training is never split")
    monkeypatch.setattr(parallel, "_controller", lambda: (controller, parts))
    monkeypatch.setattr(parallel, "_cpus", lambda: [min(os.sched_getaffinity(0))] * parts)


def bn_cnn(dtype=np.float64):
    """Both batch norm kinds and dropout: every exchange and every seeded stream."""
    return bn.Sequential(Conv2D(1, 4, 3, rng=0, dtype=dtype), BatchNorm2d(4, dtype=dtype),
                         bn.ReLU(), MaxPool2D(2), bn.Flatten(),
                         bn.Dense(4 * 13 * 13, 16, rng=1, dtype=dtype),
                         bn.BatchNorm1d(16, dtype=dtype), bn.Tanh(), bn.Dropout(0.3, rng=3),
                         bn.Dense(16, 10, rng=2, dtype=dtype))


def batches(count, rows=101, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.random((rows, 1, 28, 28)), rng.integers(0, 10, rows)) for _ in range(count)]


def train(processes, parts, data):
    model = bn_cnn()
    opt = bn.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    with parallel.SplitBatch(model, parts, processes=processes) as split:
        for x, y in data:
            losses.append(split.train_step(model, bn.softmax_cross_entropy, opt, x, y))
    return losses, model


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pid: int, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < end:
        time.sleep(0.05)
    return not alive(pid)


@pytest.mark.parametrize("parts", [2, 3])
def test_processes_train_exactly_as_threads_do(monkeypatch, parts):
    """Same losses, weights and running statistics after three steps, bit for bit."""
    two_parts(monkeypatch, parts)
    data = batches(3)
    losses_p, model_p = train(True, parts, data)
    losses_t, model_t = train(False, parts, data)
    assert losses_p == losses_t
    for a, b in zip(model_p.parameters(), model_t.parameters()):
        assert np.array_equal(a.data, b.data)
    for a, b in zip(model_p.layers, model_t.layers):
        for name, buffer in a.buffers().items():
            assert np.array_equal(buffer, b.buffers()[name])


def test_a_bigger_batch_forks_new_workers(monkeypatch):
    two_parts(monkeypatch)
    (x, y), = batches(1, rows=64)
    (big_x, big_y), = batches(1, rows=150, seed=1)

    def run(processes):
        with parallel.SplitBatch(bn_cnn(), 2, processes=processes) as split:
            small = split.step(x, y, bn.softmax_cross_entropy)
            first = split._workers.workers[0].pid if processes else None
            big = split.step(big_x, big_y, bn.softmax_cross_entropy)
            if processes:
                assert split._workers.workers[0].pid != first and wait_gone(first)
        return small, big

    assert run(True) == run(False)


def test_a_killed_worker_is_an_error_and_the_next_step_starts_afresh(monkeypatch):
    two_parts(monkeypatch)
    (x, y), = batches(1, rows=64)
    with parallel.SplitBatch(bn_cnn(), 2, processes=True) as split:
        split.step(x, y, bn.softmax_cross_entropy)
        pid = split._workers.workers[0].pid
        os.kill(pid, signal.SIGKILL)
        assert wait_gone(pid)
        with pytest.raises(workers.WorkerDied, match="ended unexpectedly"):
            split.step(x, y, bn.softmax_cross_entropy)
        assert split._workers.workers == []
        assert split.step(x, y, bn.softmax_cross_entropy)[2]


def test_an_interrupted_step_stops_its_workers(monkeypatch):
    """Ctrl-C in the calling thread mid-step: the workers, waiting for sums, are stopped."""
    two_parts(monkeypatch)
    model = bn_cnn()
    (x, y), = batches(1, rows=64)

    def interrupted(_):
        raise KeyboardInterrupt

    with parallel.SplitBatch(model, 2, processes=True) as split:
        split.step(x, y, bn.softmax_cross_entropy)
        pid = split._workers.workers[0].pid
        model.layers[-1].forward = interrupted          # after both exchanges of the forward
        with pytest.raises(KeyboardInterrupt):
            split.step(x, y, bn.softmax_cross_entropy)
        assert split._workers.workers == [] and not alive(pid)
    assert all(layer.batch_sums is None for layer in model.layers)


def test_workers_end_with_the_split_and_keep_no_inherited_file(monkeypatch, tmp_path):
    """A run directory's lock (any open file of the parent) must not live on in a worker."""
    two_parts(monkeypatch)
    (x, y), = batches(1, rows=64)
    with open(tmp_path / "lock", "w"), parallel.SplitBatch(bn_cnn(), 2, processes=True) as split:
        split.step(x, y, bn.softmax_cross_entropy)
        pid = split._workers.workers[0].pid
        targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        assert not [t for t in targets if str(tmp_path) in t]
        assert len(targets) <= 5                        # stdin, stdout, stderr, two pipes
    assert not alive(pid)


def test_a_worker_ends_when_its_parent_is_killed(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys, time
        import numpy as np
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_workers import batches, bn_cnn
        import barenet as bn
        from barenet import parallel
        parallel._controller = lambda c=parallel._threadpool_controller(): (c, 2)
        parallel._cpus = lambda: [min(os.sched_getaffinity(0))] * 2
        (x, y), = batches(1, rows=64)
        with parallel.SplitBatch(bn_cnn(), 2, processes=True) as split:
            split.step(x, y, bn.softmax_cross_entropy)
            print(split._workers.workers[0].pid, flush=True)
            time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        assert alive(worker)
    finally:
        parent.kill()
        parent.wait()
    assert wait_gone(worker)
