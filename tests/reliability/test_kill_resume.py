"""kill -9 at 20+ moments of a training run: during an epoch, during the checkpoint write,
during the evaluation at the end. After each, `--resume` (again and again when killed again)
ends bit-identical to the uninterrupted run and leaves no stray file.

The moments are drawn from a seeded generator. So that a kill lands in a named phase on a
loaded machine too, the child pauses there (the launcher below patches the live-progress
callback, os.replace and the final evaluate; barenet itself has no test hook) and is killed
while paused; a few more kills come at seeded random times, wherever they land.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from barenet.serialize import load_arrays
from conftest import stray_files

pytestmark = pytest.mark.reliability

EPOCHS, BATCHES = 4, 4                      # 400 images - 50 for validation, 100 a batch
ARGS = ["--epochs", str(EPOCHS), "--batch-size", "100", "--set", "model.hidden=[32]",
        "--set", "data.validation=50", "-q"]
RUN_FILES = {"checkpoint.safetensors", "config.json", "history.json", "metrics.json",
             "model.safetensors"}

LAUNCHER = """
import os, sys, time
sys.path.insert(0, {here!r})
import fake_barenet                         # the synthetic digits in place of MNIST
import barenet.app.runs as runs
from barenet.app import progress
runs._write_report = lambda out: None
kind, _, n = os.environ.get("PAUSE_AT", "").partition(":")
seen = {{}}

def reached(name):
    seen[name] = seen.get(name, 0) + 1
    if name == kind and seen[name] == int(n):
        with open(os.environ["PAUSE_MARK"], "w") as f:
            f.write(name)
        time.sleep(600)

on_batch_end = progress.LiveFiles.on_batch_end
def paused_batch_end(self, batch, logs):
    on_batch_end(self, batch, logs)
    reached("batch")
progress.LiveFiles.on_batch_end = paused_batch_end

replace = os.replace
def paused_replace(src, dst, *a, **k):     # the temporary is complete, not yet renamed
    if os.path.basename(dst) in ("checkpoint.safetensors", "metrics.json", "model.safetensors"):
        reached(os.path.basename(dst))
    return replace(src, dst, *a, **k)
os.replace = paused_replace

evaluate = runs.evaluate
def paused_evaluate(*a, **k):
    reached("evaluate")
    return evaluate(*a, **k)
runs.evaluate = paused_evaluate

from barenet.app.cli import run
sys.argv[0] = "barenet"
run()
"""

PHASE = {"batch": "epoch", "checkpoint.safetensors": "checkpoint write",
         "evaluate": "evaluation", "metrics.json": "evaluation",
         "model.safetensors": "evaluation"}


def start(tmp_path: Path, args, pause: str = "") -> tuple[subprocess.Popen, Path]:
    mark = tmp_path / "paused"
    mark.unlink(missing_ok=True)
    script = LAUNCHER.format(here=str(Path(__file__).parent))
    env = {**os.environ, "BARENET_OFFLINE": "1", "BARENET_FAKE_N": "400", "PAUSE_AT": pause,
           "PAUSE_MARK": str(mark)}
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    return proc, mark


def checkpoint_epoch(out: Path) -> int:
    """The epoch of the checkpoint on disk (0: none), which must load and be finite."""
    path = out / "checkpoint.safetensors"
    if not path.exists():
        return 0
    arrays, meta = load_arrays(path)
    assert all(np.isfinite(v).all() for v in arrays.values() if v.dtype.kind == "f")
    return meta["checkpoint"]["epoch"]


def moments(done: int) -> list[tuple[str, int, tuple]]:
    """(pause point, its count in a process resuming after `done` epochs, position)."""
    points = []
    for e in range(done + 1, EPOCHS + 1):
        for b in range(1, BATCHES + 1):
            points.append(("batch", (e - done - 1) * BATCHES + b, (e, b)))
        points.append(("checkpoint.safetensors", e - done, (e, BATCHES + 1)))
    for k, name in enumerate(("evaluate", "metrics.json", "model.safetensors")):
        points.append((name, 1, (EPOCHS + 1, k)))
    return points


def command_for(out: Path) -> list:
    """What a user runs after a kill: --resume once the run has begun, else the command."""
    begun = (out / "config.json").exists()
    return ["train", "--resume", out, "-q"] if begun else ["train", "--out", out, *ARGS]


def assert_same_as(out: Path, reference: Path) -> None:
    a, _ = load_arrays(out / "model.safetensors")
    b, _ = load_arrays(reference / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k

    def strip(run):
        return [{k: v for k, v in row.items() if k != "time"}
                for row in json.loads((run / "history.json").read_text())]
    assert strip(out) == strip(reference)
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (out, reference))
    assert (ma["test_accuracy"], ma["test_loss"]) == (mb["test_accuracy"], mb["test_loss"])
    assert set(os.listdir(out)) == RUN_FILES and stray_files(out) == []


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_kill_9_at_random_moments_then_resume_is_bit_identical(tmp_path):
    reference = tmp_path / "reference"
    proc, _ = start(tmp_path, ["train", "--out", reference, *ARGS])
    finish(proc)

    rng = np.random.default_rng(15)
    phases: list[str] = []
    chain = 0
    while len(phases) < 20:
        out = tmp_path / f"run{chain}"
        chain += 1
        last = (0, 0)
        while True:
            done = checkpoint_epoch(out)
            ahead = [m for m in moments(done) if m[2] > last] if len(phases) < 20 else []
            # One of the next three moments of a phase drawn at random (chains stay long);
            # none of that phase left: the run goes to its end.
            kind = rng.choice(["epoch", "checkpoint write", "evaluation"], p=[0.5, 0.3, 0.2])
            pick = [m for m in ahead if PHASE[m[0]] == kind][:3]
            name, count, last = pick[rng.integers(len(pick))] if pick else ("", 0, last)
            proc, mark = start(tmp_path, command_for(out), f"{name}:{count}" if name else "")
            if not name:
                finish(proc)
                break
            deadline = time.monotonic() + 120
            while not mark.exists():
                if proc.poll() is not None:        # ended without reaching it: finished
                    raise AssertionError(f"never paused at {name}:{count}: "
                                         f"{proc.communicate()[1]}")
                assert time.monotonic() < deadline
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            phases.append(PHASE[name])
            checkpoint_epoch(out)                   # intact after every kill
        assert_same_as(out, reference)
    print("kill -9 moments:", {p: phases.count(p) for p in set(phases)})
    assert set(phases) == {"epoch", "checkpoint write", "evaluation"}, phases
    assert phases.count("checkpoint write") >= 3, phases

    # And a few kills at seeded random times, wherever they land (startup included).
    out = tmp_path / "timed"
    for delay in rng.uniform(0.2, 1.5, size=4):
        proc, _ = start(tmp_path, command_for(out))
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        checkpoint_epoch(out)
    proc, _ = start(tmp_path, command_for(out))
    finish(proc)
    assert_same_as(out, reference)
