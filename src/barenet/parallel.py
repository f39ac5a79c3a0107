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
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

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
    """fn(x) computed as fn on row chunks in parallel threads, concatenated.

    fn must be row-wise (row i of the output depends only on row i of the input) and must
    not share mutable scratch state between concurrent calls.
    """
    k = threads_for(len(x))
    if k == 1 or not _lock.acquire(blocking=False):
        return fn(x)
    try:
        controller, _ = _controller()
        bounds = np.linspace(0, len(x), k + 1).astype(int)
        with controller.limit(limits=1, user_api="blas"):
            parts = list(_pool(k).map(fn, [x[a:b] for a, b in zip(bounds[:-1], bounds[1:])]))
        return np.concatenate(parts)
    finally:
        _lock.release()
