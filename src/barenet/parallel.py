"""Row-parallel inference: split a large batch across threads, one BLAS thread each.

Why: on a large inference batch NumPy spends ~20 % of the time in element-wise passes
(uint8 -> float, bias, ReLU) that run on one core while the BLAS GEMMs use all of them.
Splitting the rows into one chunk per core and running the whole forward pass on each chunk
in its own Python thread (NumPy releases the GIL inside ufuncs and GEMMs) keeps every core
busy all the time. BLAS must then use one thread per call, or the chunks' GEMMs would each
start a full set of BLAS threads and oversubscribe the cores (OpenBLAS then stalls badly):
threadpoolctl sets that limit for the duration and restores it afterwards.

Without threadpoolctl (an optional dependency) nothing runs in parallel here: `run_rows`
falls back to one call on the whole batch, which is always correct.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

CHUNK_ROWS = 512
# Below this many rows the GEMMs are too small for the split to pay for the thread hand-off.
MIN_ROWS_PER_THREAD = 1024

_lock = threading.Lock()        # one parallel section at a time: the BLAS limit is global


@functools.lru_cache(maxsize=1)
def _controller():
    """(threadpoolctl controller, BLAS thread count), or (None, 1) when it cannot help."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None, 1
    controller = ThreadpoolController()
    blas = [lib for lib in controller.info() if lib.get("user_api") == "blas"]
    threads = max((lib.get("num_threads") or 1 for lib in blas), default=1)
    return (controller, threads) if blas and threads > 1 else (None, 1)


@functools.lru_cache(maxsize=1)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="barenet-rows")


def threads_for(n_rows: int) -> int:
    """How many chunks run_rows would split n_rows into (1 = no split)."""
    _, threads = _controller()
    return max(1, min(threads, n_rows // MIN_ROWS_PER_THREAD))


def run_rows(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """fn(x) computed as fn on row chunks of at most CHUNK_ROWS, in parallel threads.

    fn must be row-wise (row i of the output depends only on row i of the input) and must
    not share mutable scratch state between concurrent calls. A chunk's activations
    (512 x 256 floats, 0.5 MB) stay in the core's L2 cache from one layer to the next.
    The calling thread works too, and every thread takes the next unclaimed chunk until
    none is left, so a helper thread that wakes late (an idle core can take milliseconds
    to start) or gets preempted only does less of the work, instead of holding up the end.
    """
    k = threads_for(len(x))
    starts = range(0, len(x), CHUNK_ROWS)
    if k == 1 or not _lock.acquire(blocking=False):
        return np.concatenate([fn(x[i:i + CHUNK_ROWS]) for i in starts]) if len(x) else fn(x)
    try:
        controller, _ = _controller()
        parts: list[np.ndarray | None] = [None] * len(starts)
        claim = itertools.count()               # next() on a count is atomic under the GIL

        def work():
            for j in iter(claim.__next__, None):
                if j >= len(parts):
                    return
                parts[j] = fn(x[starts[j]:starts[j] + CHUNK_ROWS])

        with controller.limit(limits=1, user_api="blas"):
            helpers = [_pool(k - 1).submit(work) for _ in range(k - 1)]
            work()
            for helper in helpers:
                helper.result()
        return np.concatenate(parts)
    finally:
        _lock.release()
