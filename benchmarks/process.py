"""Cases that need a fresh process: peak RSS of default training, CLI start-up, data load.

Each runs a subprocess, so it measures what a user gets: interpreter start, imports, page
cache as it is. barenet alone (PyTorch has no counterpart for these).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import Result, check, median

LOAD_SNIPPET = ("import time; t0 = time.perf_counter(); from barenet.data import load_mnist; "
                "t1 = time.perf_counter(); load_mnist(progress=False); "
                "print(t1 - t0, time.perf_counter() - t1)")


def barenet_command() -> list[str]:
    """The installed `barenet` console script of this interpreter (not a version-manager
    shim in front of it), else the same entry point through `python -c`."""
    script = Path(sys.executable).with_name("barenet")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "from barenet.app.cli import run; run()"]


# Runs argv[1:] and prints its exit code and peak RSS in kB. The child is started from this
# small interpreter, not from the suite: a child forked from a big parent (PyTorch and MNIST
# loaded, ~600 MB) is charged the parent's pages until it execs, and ru_maxrss keeps that.
_RSS_WRAPPER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def run_with_peak_rss(cmd: list[str]) -> tuple[int, float, float]:
    """(exit code, seconds, peak RSS in MB) of `cmd`, from wait4's rusage of that child."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *cmd], capture_output=True,
                         text=True, check=True).stdout
    seconds = time.perf_counter() - start
    code, maxrss = (int(v) for v in out.split())
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / (1024 * 1024)
    return code, seconds, maxrss * scale


def rss_case(*, epochs: int | None = None, data_dir=None) -> Result:
    """Peak RSS of `barenet train` with the default config, in a subprocess."""
    with tempfile.TemporaryDirectory(prefix="barenet-bench-") as tmp:
        cmd = [*barenet_command(), "train", "--out", str(Path(tmp) / "run"), "-q"]
        if epochs:
            cmd += ["--epochs", str(epochs)]
        if data_dir:
            cmd += ["--data-dir", str(data_dir)]
        code, seconds, peak = run_with_peak_rss(cmd)
    what = "Peak RSS of `barenet train` (default config"
    what += f", {epochs} epochs)" if epochs else ")"
    note = f"wall time {seconds:.1f} s" if code == 0 else f"exit code {code}"
    return Result(case="rss", what=what, unit="MB", barenet=peak if code == 0 else None,
                  target="<= 400 MB", ok=check(peak, "<=", 400.0) if code == 0 else False,
                  note=note)


def startup_case(*, repeats: int) -> Result:
    """Wall time of `barenet --help`, median of `repeats` runs after one warm-up."""
    cmd = [*barenet_command(), "--help"]
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        if i:
            times.append(time.perf_counter() - start)
    bare = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - start)
    figure = median(times)
    return Result(case="startup", what="`barenet --help` start-up (wall time)", unit="s",
                  barenet=figure, target="<= 0.3 s", ok=check(figure, "<=", 0.3),
                  note=f"bare `python -c pass` {median(bare):.3f} s", samples={"barenet": times})


def load_case(*, repeats: int, data_dir=None) -> Result:
    """`load_mnist()` from the cache in a fresh process, median of runs; the import of
    barenet.data (NumPy included) before it is timed apart and given in the note."""
    env = dict(os.environ)
    if data_dir:
        env["BARENET_DATA_DIR"] = str(data_dir)
    imports, loads = [], []
    for i in range(repeats + 1):
        out = subprocess.run([sys.executable, "-c", LOAD_SNIPPET], env=env, check=True,
                             capture_output=True, text=True).stdout
        if i:
            import_s, load_s = (float(v) for v in out.split()[-2:])
            imports.append(import_s)
            loads.append(load_s)
    figure = median(loads)
    return Result(case="load", what="Cached MNIST load: load_mnist() in a fresh process "
                                    "(SHA-256 verified)", unit="s",
                  barenet=figure, target="<= 0.3 s", ok=check(figure, "<=", 0.3),
                  note=f"before it, `from barenet.data import load_mnist` "
                       f"{median(imports):.3f} s", samples={"barenet": loads, "import": imports})
