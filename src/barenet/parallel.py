"""The fast paths that use every core: row-parallel inference and split-batch training.

Inference (`infer`, behind Sequential.logits): on a large batch NumPy spends a good share of
the time in element-wise passes (uint8 -> float, bias, ReLU) that run on one core while the
BLAS GEMMs use all of them. Running the whole forward pass on row chunks in one Python thread
per core (NumPy releases the GIL inside ufuncs and GEMMs) keeps every core busy. Details:

- BLAS must use one thread per call, or each chunk's GEMM would start a full set of BLAS
  threads and oversubscribe the cores (OpenBLAS then stalls badly): threadpoolctl sets that
  limit for the duration and restores it afterwards.
- Chunks of 512 rows, claimed one at a time: a chunk's activations (512 x 256 floats, 0.5 MB)
  stay in the core's L2 cache from one layer to the next, and a thread that starts late or is
  preempted simply does fewer chunks instead of holding up the end.
- Each thread is pinned to its own CPU for the duration (Linux), when the threads take all
  the CPUs the process may use: unpinned, Linux can wake an idle helper thread on the
  caller's CPU, and the two threads then share one core. The caller's affinity is restored.
- Pixels that are 0 in every image of a chunk are skipped by the first Dense layer.
- Models with feature maps (conv layers) keep scratch buffers in their layers: each thread
  runs its own eval-mode copy of the model on chunks of MAP_CHUNK images.

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
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from . import workers
from .layers import Dense

CHUNK_ROWS = 512
SPARSE_MIN_ROWS = 256   # smallest uint8 chunk for which the first Dense skips empty pixels
MAP_BATCH = 1000        # inference batch cap for models with feature maps (conv layers)
MAP_CHUNK = 64          # images per chunk for those: their maps stay in the caches
# Below this many rows per thread the GEMMs are too small to pay for the thread hand-off.
MIN_ROWS_PER_THREAD = 1024
RowFn = Callable[[np.ndarray], np.ndarray]

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

    The thread count is read on every call (it is cheap), so a threadpool_limits(1) set by the
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


def run_rows(fn: RowFn | list[RowFn], x: np.ndarray, *, rows: int = CHUNK_ROWS) -> np.ndarray:
    """fn(x), computed as fn on row chunks of at most `rows` in parallel threads.

    fn must be row-wise (row i of the output depends only on row i of the input). Either one
    callable that keeps no mutable scratch state, or a list of callables, one per thread,
    for models whose layers keep scratch buffers (each thread then calls its own).
    """
    fns = fn if isinstance(fn, list) else None
    k = min(len(fns), -(-len(x) // rows)) if fns else threads_for(len(x))
    fn = fns[0] if fns else fn
    starts = range(0, len(x), rows)
    if k <= 1 or not _lock.acquire(blocking=False):
        return np.concatenate([fn(x[i:i + rows]) for i in starts]) if len(x) else fn(x)
    try:
        controller, _ = _controller()
        parts: list[np.ndarray | None] = [None] * len(starts)
        claim = itertools.count()               # next() on a count is atomic under the GIL
        cpus = _cpus()

        def work(own_fn, cpu: int | None = None):
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})  # a pool thread: stays pinned, harmless
            for j in claim:
                if j >= len(parts):
                    return
                parts[j] = own_fn(x[starts[j]:starts[j] + rows])

        # Pin only when the threads take every CPU the process may use: with spare CPUs
        # (several processes on a big machine) the scheduler places them better than a
        # fixed choice of the lowest-numbered ones would.
        pinned = cpus is not None and len(cpus) == k
        with controller.limit(limits=1, user_api="blas"):
            helpers = [_pool(k - 1).submit(work, fns[i + 1] if fns else fn,
                                           cpus[i + 1] if pinned else None)
                       for i in range(k - 1)]
            try:
                with _pinned_to(cpus[0] if pinned else None):
                    work(fn)
            finally:
                for helper in helpers:
                    helper.result()
        return np.concatenate(parts)
    finally:
        _lock.release()


def infer(model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Eval-mode logits (N, K) of raw input x (uint8 images or floats), batch by batch.

    The fast path behind Sequential.logits; the same numbers as model.forward(x) up to float
    rounding. Each batch is split across the cores (run_rows): an MLP's rows directly, a
    model with feature maps in chunks of MAP_CHUNK images, one copy of the model per thread
    (its layers keep scratch buffers). The model must already be in eval mode.
    """
    row_wise = all(layer.row_parallel for layer in model.layers)
    if row_wise:
        forward, rows = functools.partial(_forward_raw, model), CHUNK_ROWS
    else:               # feature maps: 10,000 images of 32x24x24 floats alone are 740 MB
        batch_size, rows = min(batch_size, MAP_BATCH), MAP_CHUNK
        _, threads = _controller()
        threads = min(threads, -(-len(x) // rows))
        try:
            copies = [model, *(_eval_copy(model) for _ in range(threads - 1))]
        except ValueError:      # a layer type outside the registry: no copy, one thread
            copies = [model]
        forward = [functools.partial(_forward_raw, copy) for copy in copies]
    out = [run_rows(forward, x[i:i + batch_size], rows=rows)
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _eval_copy(model):
    """A copy of `model` in eval mode with the same weights and statistics (its own buffers)."""
    params = model.parameters()
    dtype = params[0].data.dtype if params else np.float32
    copy = type(model).from_architecture(model.architecture(), dtype=dtype)
    copy.load_state_arrays(model.state_arrays())
    return copy.eval()


def _forward_raw(model, x: np.ndarray) -> np.ndarray:
    """Eval-mode forward pass of raw input: uint8 images or float arrays."""
    first = model.layers[0] if model.layers else None
    if (x.dtype != np.uint8 or not isinstance(first, Dense) or model.training
            or len(x) < SPARSE_MIN_ROWS):
        return model.forward(model.as_input(x))
    pixels = x.reshape(len(x), -1)
    # A pixel that is 0 in every image of the chunk adds nothing to x @ W, so its column
    # of x and row of W can go: digits leave the borders empty (about 28 % of the columns
    # of a 512-image MNIST chunk), and the first GEMM, most of the work, shrinks with
    # them. Gathering the uint8 columns and W's rows costs far less than that, except
    # on small batches (W's rows are gathered per chunk): those take the plain path.
    used = np.flatnonzero(pixels.any(axis=0))
    weights = first.W.data
    if len(used) < 0.9 * pixels.shape[1]:
        pixels, weights = pixels[:, used], weights[used]
    h = model.as_input(pixels, weights.dtype) @ weights
    if first.b is not None:
        h += first.b.data
    for layer in model.run_order()[1:]:
        h = layer.forward(h)
    return h


# Training: a batch split across the cores -------------------------------------------------

MIN_PART_ROWS = 32              # below this many images per part the GEMMs get too thin
MIN_SPLIT_BATCH = 2 * MIN_PART_ROWS     # smaller batches train in the calling thread alone


def training_parts(model, batch_size: int) -> int:
    """Into how many parts fit splits each batch of `model` (1: no split; see SplitBatch).

    Only convolutional models: their im2col copies, col2im adds, pooling and batch norm run on
    one core otherwise, while an MLP's time is in GEMMs that BLAS already spreads. One part per
    CPU the process may use, as long as BLAS may use that many threads (OPENBLAS_NUM_THREADS=1
    keeps training on one core) and every part gets MIN_PART_ROWS images.
    """
    if not model.layers or model.layers[0].input_ndim != 4:
        return 1
    (controller, threads), cpus = _controller(), _cpus()
    if controller is None or cpus is None:
        return 1
    return max(1, min(len(cpus), threads, batch_size // MIN_PART_ROWS))


def can_split_training(model, batch_size: int = 128) -> bool:
    return training_parts(model, batch_size) > 1


class SplitBatch:
    """Forward and backward of one training batch as K parts, one per core.

    The model takes the first part in the calling thread; K-1 replicas take the others, in
    worker processes (Linux: workers.py; no GIL between them) or else in pool threads sharing
    the model's weight arrays. Each part's loss gradient is weighted by its share of the
    batch, so the summed parameter gradients equal the whole batch's. Batch norm layers
    exchange their per-part sums, so their statistics and gradients are the whole batch's too.
    A replica's dropout draws from a generator seeded from the model's own stream each batch:
    runs are reproducible for a given number of parts, and a checkpoint of the model alone
    resumes them exactly. Use as a context manager around the epochs: it limits BLAS to one
    thread per call and pins each part to its own CPU meanwhile.
    """

    def __init__(self, model, parts: int = 2, *, whole_step=None, processes=None):
        self.model, self.parts = model, parts
        self.whole_step = whole_step    # train_step for batches too small to split
        self.processes = workers.available() if processes is None else bool(processes)
        params = model.parameters()
        dtype = params[0].data.dtype if params else np.float32
        self.replicas = [type(model).from_architecture(model.architecture(), dtype=dtype)
                         for _ in range(parts - 1)]
        self.shards = [model, *self.replicas]
        for replica in self.replicas:
            for own, twin in zip(params, replica.parameters()):
                twin.data = own.data
            replica.train()
        self.dropouts = [[layer for layer in shard.layers
                          if isinstance(getattr(layer, "rng", None), np.random.Generator)]
                         for shard in self.shards]
        # Layers that need whole-batch sums, as one list per shard (same order in each).
        self.norms = [[layer for layer in shard.layers if layer.uses_batch_sums]
                      for shard in self.shards]
        self._exchanges: list[workers.BatchSums] = []   # threads: one per batch norm layer
        self._workers: workers.Workers | None = None     # processes: while entered
        self._context = contextlib.ExitStack()

    def __enter__(self) -> SplitBatch:
        controller, _ = _controller()
        cpus = _cpus() or []
        # Pin only when the parts take every CPU the process may use (see run_rows).
        self._cpus = cpus if len(cpus) == self.parts else [None] * self.parts
        self._context.enter_context(controller.limit(limits=1, user_api="blas"))
        self._context.enter_context(_pinned_to(self._cpus[0]))
        if self.processes:
            self._workers = workers.Workers(self)
            self._context.callback(self._workers.stop)
        return self

    def __exit__(self, *exc) -> None:
        self._context.close()
        self._workers = None

    def _unshare(self) -> None:
        for layer in itertools.chain(*self.norms):
            layer.batch_sums = None

    def train_step(self, model, loss, optimizer, x: np.ndarray,
                   y: np.ndarray) -> tuple[float, int]:
        """training.train_step with the batch in K parts: (mean loss, correct predictions).
        `model` is this split's model; batches under MIN_SPLIT_BATCH go to `whole_step`."""
        if len(x) < MIN_SPLIT_BATCH and self.whole_step is not None:
            return self.whole_step(model, loss, optimizer, x, y)
        batch_loss, correct, finite = self.step(x, y, loss)
        if finite:
            optimizer.step()
        return batch_loss, correct

    def step(self, inputs: np.ndarray, labels: np.ndarray, loss) -> tuple[float, int, bool]:
        """Fill every parameter's .grad for the batch: (mean loss, correct predictions, finite)."""
        m, k = len(inputs), self.parts
        bounds = workers.part_bounds(m, k)
        # Each replica's dropout draws from a stream seeded from the model's own, per batch.
        seeds = [[int(own.rng.integers(2**63)) for _ in twins]
                 for own, *twins in zip(*self.dropouts)]           # [layer][replica]
        if self._workers is not None:
            results = self._in_processes(inputs, labels, loss, bounds, seeds)
        else:
            results = self._in_threads(inputs, labels, loss, bounds, seeds)
        for replica in self.replicas:
            for own, twin in zip(self.model.parameters(), replica.parameters()):
                own.grad += twin.grad
        batch_loss = sum(r[0] * (hi - lo) for r, lo, hi in zip(results, bounds, bounds[1:])) / m
        return batch_loss, sum(r[1] for r in results), all(r[2] for r in results)

    def _in_processes(self, inputs, labels, loss, bounds, seeds) -> list[tuple]:
        """Parts 1..K-1 in the worker processes, part 0 here (workers.py)."""
        team, m = self._workers, len(inputs)
        try:
            team.ensure(inputs, loss)
            team.start(inputs, labels, [list(s) for s in zip(*seeds)] or [[]] * len(team.workers))
            for layer in self.norms[0]:
                layer.batch_sums = team.total
            first = self._part(self.model, inputs[:bounds[1]], labels[:bounds[1]], loss, m)
            return [first, *team.finish()]
        except BaseException:
            team.stop(kill=True)    # mid-step: they may wait for sums that will never come
            raise
        finally:
            self._unshare()

    def _in_threads(self, inputs, labels, loss, bounds, seeds) -> list[tuple]:
        """Parts 1..K-1 in pool threads, part 0 in the calling thread (they share the GIL)."""
        k, m = self.parts, len(inputs)
        for twins, layer_seeds in zip(zip(*self.dropouts[1:]), seeds):
            for twin, seed in zip(twins, layer_seeds):
                twin.rng = np.random.default_rng(seed)
        # Every batch norm layer gets a fresh exchange with its twins in the other parts.
        self._exchanges = [workers.BatchSums(k) for _ in self.norms[0]]
        for sums, twins in zip(self._exchanges, zip(*self.norms)):
            for i, layer in enumerate(twins):
                layer.batch_sums = functools.partial(sums.total, i)

        def part(i):
            if i and self._cpus[i] is not None:
                os.sched_setaffinity(0, {self._cpus[i]})   # a pool thread: stays pinned
            lo, hi = bounds[i], bounds[i + 1]
            try:
                return self._part(self.shards[i], inputs[lo:hi], labels[lo:hi], loss, m)
            except BaseException:
                for sums in self._exchanges:    # wake the other parts instead of a deadlock
                    sums.abort()
                raise

        futures = [_pool(k - 1).submit(part, i) for i in range(1, k)]
        try:
            first = part(0)
        except Exception as error:
            first = error
        finally:                # also on Ctrl-C: the other parts were woken, let them end
            wait(futures)
            self._unshare()     # a batch outside step() is the model's alone
        results = [first, *(f.exception() or f.result() for f in futures)]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:              # the part that failed, not the others' BrokenBarrierError
            raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)),
                       errors[0])
        return results

    @staticmethod
    def _part(model, x, y, loss, m):
        logits = model.forward(x)
        part_loss, grad = loss(logits, y)
        # Backward runs even on a non-finite loss: batch norm's exchanges need every part
        # (train_step skips the update on the returned flag).
        grad *= len(x) / m
        model.backward(grad)
        return (part_loss, int(np.count_nonzero(logits.argmax(axis=1) == y)),
                math.isfinite(part_loss))
