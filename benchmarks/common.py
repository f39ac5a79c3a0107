"""Shared plumbing: alternating timers, result rows, thread settings, machine description.

The machine is shared, so no absolute figure is trusted alone: barenet and PyTorch run
alternately in the same process after a warm-up, and the ratio of their medians is what
the targets are set on (a load spike slows both sides of one round alike).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass
class Result:
    """One row of the table: a figure for barenet, the same for PyTorch, and their ratio.

    `higher_is_better` says how to read the figure (throughput vs time or memory); `ratio`
    is always barenet / PyTorch of the figure, `target` a bound on the ratio or the figure.
    """

    case: str
    what: str
    unit: str
    barenet: float | None
    torch: float | None = None
    higher_is_better: bool = False
    target: str = ""
    ok: bool | None = None
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)
    other_load: float | None = None     # cores used by other processes meanwhile (OtherLoad)

    @property
    def ratio(self) -> float | None:
        if self.barenet is None or not self.torch:
            return None
        return self.barenet / self.torch

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def check(value: float | None, op: str, bound: float) -> bool | None:
    """value <= bound or value >= bound; None when there is nothing to compare."""
    if value is None:
        return None
    return value <= bound if op == "<=" else value >= bound


# Pause before each timed run. OpenBLAS's worker threads busy-wait for ~0.1 s after a call
# and PyTorch's OpenMP threads briefly too: a run started inside that window shares the
# cores with the other library's spinning threads. Measured on 2 cores without the pause,
# PyTorch's one-batch inference took 0.11-0.14 s right after barenet and 0.034 s after
# itself; with it, the spread is gone.
SETTLE_SECONDS = 0.3


def alternate(runs: dict[str, Callable[[], float | None]], *, repeats: int,
              warmup: int = 1, settle: float | None = None) -> dict[str, list[float]]:
    """Call each run in turn, `warmup` untimed rounds then `repeats` timed rounds.

    A run may return its own duration as a float (so it can leave set-up out); any other
    return value has the call timed whole. The order flips every round (ABBA), and each run
    starts `settle` seconds (default SETTLE_SECONDS) after the previous one ended.
    """
    settle = SETTLE_SECONDS if settle is None else settle

    def timed(fn):
        if settle:
            time.sleep(settle)
        start = time.perf_counter()
        own = fn()
        return own if isinstance(own, float) else time.perf_counter() - start

    names = list(runs)
    for _ in range(warmup):
        for name in names:
            timed(runs[name])
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            samples[name].append(timed(runs[name]))
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values)


def torch_or_none():
    """The torch module, or None when PyTorch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def blas_info() -> dict:
    """NumPy's BLAS as threadpoolctl reports it (library, kernel, threads), when available."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {"note": "threadpoolctl not installed"}
    import numpy  # noqa: F401  (loads the BLAS library so threadpoolctl sees it)
    for pool in threadpool_info():
        if pool.get("user_api") == "blas" and "numpy" in pool.get("filepath", ""):
            return {k: pool.get(k) for k in ("internal_api", "version", "architecture",
                                             "num_threads", "threading_layer")}
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            return {k: pool.get(k) for k in ("internal_api", "version", "architecture",
                                             "num_threads", "threading_layer")}
    return {"note": "no BLAS found by threadpoolctl"}


def set_threads(threads: int | None) -> int:
    """Make NumPy's BLAS and PyTorch use the same number of threads; returns it.

    None keeps NumPy's BLAS default (all cores here) and gives PyTorch the same number.
    """
    import numpy  # noqa: F401  (threadpoolctl limits only the libraries already loaded)

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threads is not None and threadpool_limits is not None:
        # Kept alive for the whole process: the limit lasts as long as this object.
        set_threads._limit = threadpool_limits(limits=threads, user_api="blas")
    if threads is None:
        threads = blas_info().get("num_threads") or os.cpu_count() or 1
    torch = torch_or_none()
    if torch is not None:
        torch.set_num_threads(threads)
    return threads


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


class OtherLoad:
    """Cores kept busy by *other* processes while a case ran: the machine's busy time from
    /proc/stat minus this process's own CPU time (children included), over the wall time.
    0 is a quiet machine; on 2 cores, 1 means someone else used a whole core throughout."""

    def __init__(self):
        self.start = self._snapshot()

    @staticmethod
    def _snapshot():
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except OSError:
            return None
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        return time.perf_counter(), busy, own

    def cores(self) -> float | None:
        end = self._snapshot()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return None
        wall = end[0] - self.start[0]
        other = (end[1] - self.start[1]) - (end[2] - self.start[2])
        return round(max(other, 0.0) / wall, 2)


def machine_info() -> dict:
    import numpy

    torch = torch_or_none()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__ if torch else None,
        "torch_threads": torch.get_num_threads() if torch else None,
        "blas": blas_info(),
        "openblas_env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                    "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
                         if k in os.environ},
        "platform": platform.platform(),
        "argv": sys.argv[1:],
    }
