"""Row-parallel inference: a large batch worked through by one thread per core.

Why: on a large inference batch NumPy spends ~20 % of the time in element-wise passes
(uint8 -> float, bias, ReLU) that run on one core while the BLAS GEMMs use all of them.
Running the whole forward pass on row chunks in one Python thread per core (NumPy releases
the GIL inside ufuncs and GEMMs) keeps every core busy all the time. Three details matter:

- BLAS must use one thread per call, or each chunk's GEMM would start a full set of BLAS
  threads and oversubscribe the cores (OpenBLAS then stalls badly): threadpoolctl sets that
  limit for the duration and restores it afterwards.
- Chunks of 512 rows, claimed one at a time: a chunk's activations (512 x 256 floats, 0.5 MB)
  stay in the core's L2 cache from one layer to the next, and a thread that starts late or is
  preempted simply does fewer chunks instead of holding up the end.
- Each thread is pinned to its own CPU for the duration (Linux), when the threads take all
  the CPUs the process may use. Measured on a 2-vCPU VM:
  after ~0.3 s idle, Linux woke the helper thread on the caller's CPU and the two threads
  shared one core (10 involuntary context switches per call instead of 2): 38-42 ms instead
  of 21 ms for 10,000 images. Pinned, it took 23-24 ms. The caller's affinity is restored.

Without threadpoolctl (a dependency, imported only when present) nothing runs in parallel:
`run_rows` works through the chunks in the calling thread, which is always correct.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

CHUNK_ROWS = 512
# Below this many rows per thread the GEMMs are too small to pay for the thread hand-off.
MIN_ROWS_PER_THREAD = 1024

_lock = threading.Lock()        # one parallel section at a time: the BLAS limit is global


@functools.lru_cache(maxsize=1)
def _threadpool_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()       # finds the loaded BLAS libraries once


def _controller():
    """(threadpoolctl controller, BLAS threads now), or (None, 1) when it cannot help.

    The thread count is read on every call (~2 us), so a threadpool_limits(1) set by the
    caller is honoured: inference then stays in the calling thread too.
    """
    controller = _threadpool_controller()
    if controller is None:
        return None, 1
    blas = [lib for lib in controller.info() if lib.get("user_api") == "blas"]
    threads = max((lib.get("num_threads") or 1 for lib in blas), default=1)
    return (controller, threads) if blas and threads > 1 else (None, 1)


@functools.lru_cache(maxsize=1)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="barenet-rows")


def _after_fork_in_child() -> None:
    # A forked child inherits the pool object but not its threads (submit would wait for
    # ever) and maybe a held lock: start both afresh.
    global _lock
    _pool.cache_clear()
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _cpus() -> list[int] | None:
    """CPUs this process may run on, when threads can be pinned to them (Linux)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    return sorted(os.sched_getaffinity(0))


@contextlib.contextmanager
def _pinned_to(cpu: int | None):
    """Run the calling thread on `cpu` only (None: leave it be), then restore its affinity."""
    if cpu is None:
        yield
        return
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def threads_for(n_rows: int) -> int:
    """How many threads run_rows would use for n_rows (1 = the calling thread alone)."""
    _, threads = _controller()
    return max(1, min(threads, n_rows // MIN_ROWS_PER_THREAD))


def run_rows(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """fn(x), computed as fn on row chunks of at most CHUNK_ROWS in parallel threads.

    fn must be row-wise (row i of the output depends only on row i of the input) and must
    not share mutable scratch state between concurrent calls.
    """
    k = threads_for(len(x))
    starts = range(0, len(x), CHUNK_ROWS)
    if k == 1 or not _lock.acquire(blocking=False):
        return np.concatenate([fn(x[i:i + CHUNK_ROWS]) for i in starts]) if len(x) else fn(x)
    try:
        controller, _ = _controller()
        parts: list[np.ndarray | None] = [None] * len(starts)
        claim = itertools.count()               # next() on a count is atomic under the GIL
        cpus = _cpus()

        def work(cpu: int | None = None):
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})  # a pool thread: stays pinned, harmless
            for j in claim:
                if j >= len(parts):
                    return
                parts[j] = fn(x[starts[j]:starts[j] + CHUNK_ROWS])

        # Pin only when the threads take every CPU the process may use: with spare CPUs
        # (several processes on a big machine) the scheduler places them better than a
        # fixed choice of the lowest-numbered ones would.
        pinned = cpus is not None and len(cpus) == k
        with controller.limit(limits=1, user_api="blas"):
            helpers = [_pool(k - 1).submit(work, cpus[i + 1] if pinned else None)
                       for i in range(k - 1)]
            try:
                with _pinned_to(cpus[0] if pinned else None):
                    work()
            finally:
                for helper in helpers:
                    helper.result()
        return np.concatenate(parts)
    finally:
        _lock.release()


# Training: a batch split across two threads ------------------------------------------------

MIN_SPLIT_BATCH = 64            # smaller batches train in the calling thread alone


def can_split_training(model) -> bool:
    """Whether fit may train `model` on two half-batches at once (see SplitBatch).

    Only convolutional models (their im2col copies, col2im adds and pooling run on one core
    otherwise; an MLP's time is in GEMMs that BLAS already spreads), only without layers that
    keep running statistics (batch norm: its batch statistics would become per-half), and only
    when the process may use exactly two CPUs and BLAS two threads (OPENBLAS_NUM_THREADS=1 keeps
    training on one core). That is the machine this was measured on; with more cores, BLAS
    spreading each GEMM over all of them may well beat two pinned halves.
    """
    if not model.layers or getattr(model.layers[0], "input_ndim", 2) != 4:
        return False
    if any(layer.buffers() for layer in model.layers):
        return False
    controller, threads = _controller()
    cpus = _cpus()
    return controller is not None and threads >= 2 and cpus is not None and len(cpus) == 2


class SplitBatch:
    """Forward and backward of one training batch as two halves in two threads.

    The model takes the first half in the calling thread; a replica that shares its weight
    arrays (so the optimizer's in-place updates reach both) takes the second in a pool thread.
    Each half's loss gradient is weighted by its share of the batch, so the summed parameter
    gradients equal the whole batch's. Dropout in the replica draws from a generator seeded
    from the model's own dropout stream each batch: runs stay reproducible, and a checkpoint of
    the model alone resumes them exactly. Use as a context manager around the epochs: it limits
    BLAS to one thread per call and pins the two threads to two CPUs meanwhile.
    """

    def __init__(self, model):
        self.model = model
        params = model.parameters()
        dtype = params[0].data.dtype if params else np.float32
        self.replica = type(model).from_architecture(model.architecture(), dtype=dtype)
        self.pairs = list(zip(params, self.replica.parameters()))
        for own, twin in self.pairs:
            twin.data = own.data
        self.dropouts = [(a, b) for a, b in zip(model.layers, self.replica.layers)
                         if isinstance(getattr(a, "rng", None), np.random.Generator)]
        self.replica.train()
        self._context = contextlib.ExitStack()

    def __enter__(self) -> SplitBatch:
        controller, _ = _controller()
        self._cpus = _cpus()[:2]
        self._context.enter_context(controller.limit(limits=1, user_api="blas"))
        self._context.enter_context(_pinned_to(self._cpus[0]))
        return self

    def __exit__(self, *exc) -> None:
        self._context.close()

    def step(self, inputs: np.ndarray, labels: np.ndarray, loss) -> tuple[float, int, bool]:
        """Fill every parameter's .grad for the batch: (mean loss, correct predictions, finite)."""
        m = len(inputs)
        h = m // 2
        for own, twin in self.dropouts:
            twin.rng = np.random.default_rng(int(own.rng.integers(2**63)))

        def second_half():
            os.sched_setaffinity(0, {self._cpus[1]})
            return self._half(self.replica, inputs[h:], labels[h:], loss, m)

        future = _pool(1).submit(second_half)
        try:
            first = self._half(self.model, inputs[:h], labels[:h], loss, m)
        finally:
            second = future.result()
        for own, twin in self.pairs:
            own.grad += twin.grad
        batch_loss = (first[0] * h + second[0] * (m - h)) / m
        return batch_loss, first[1] + second[1], first[2] and second[2]

    @staticmethod
    def _half(model, x, y, loss, m):
        logits = model.forward(x)
        part_loss, grad = loss(logits, y)
        finite = math.isfinite(part_loss)
        if finite:
            grad *= len(x) / m
            model.backward(grad)
        return part_loss, int(np.count_nonzero(logits.argmax(axis=1) == y)), finite
