"""Progress of a training run: a rich bar per epoch on a terminal and one line per epoch
(ProgressPrinter); history.json and progress.json in the run directory (LiveFiles)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

from ..serialize import atomic_write_bytes
from ..training import Callback

HISTORY_FILE = "history.json"
PROGRESS_FILE = "progress.json"


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def format_logs(logs: dict, epochs: int) -> str:
    parts = [f"epoch {logs['epoch']:>{len(str(epochs))}}/{epochs}",
             f"loss {logs['loss']:.4f}", f"accuracy {logs['accuracy']:.4f}"]
    if "val_loss" in logs:
        parts += [f"val_loss {logs['val_loss']:.4f}", f"val_accuracy {logs['val_accuracy']:.4f}"]
    parts += [f"lr {logs['lr']:.3g}", f"{logs['time']:.1f}s"]
    return "  ".join(parts)


class ProgressPrinter(Callback):
    """Prints one line per epoch to `stream`; adds a transient batch bar when it is a terminal."""

    def __init__(self, epochs: int, stream=None, bar: bool | None = None):
        self.epochs = epochs
        self.stream = stream or sys.stderr
        self.bar = self.stream.isatty() if bar is None else bar
        self._progress = None
        self._task = None

    def _ensure_bar(self, total: int):
        if self._progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                                      console=Console(file=self.stream), transient=True)
            self._progress.start()
        if self._task is None:
            self._task = self._progress.add_task("epoch", total=total, loss="-")

    def on_batch_end(self, batch, logs):
        if not self.bar:
            return
        self._ensure_bar(logs["batches"])
        if batch % 20 == 0 or batch == logs["batches"] - 1:
            self._progress.update(self._task, completed=batch + 1, loss=f"{logs['loss']:.4f}")

    def on_epoch_end(self, epoch, logs):
        line = format_logs(logs, self.epochs)
        if self._progress is not None:
            self._progress.remove_task(self._task)
            self._task = None
            self._progress.console.print(line, highlight=False)
        else:
            print(line, file=self.stream, flush=True)

    def on_train_end(self, state):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class LiveFiles(Callback):
    """history.json after every epoch, and progress.json (epoch, batch, running loss, elapsed,
    ETA) about once a second during one: both atomic, so a reader never sees half a file.

    progress.json carries the writer's pid and host, so a reader on the same machine can tell
    a run that died from one that is still training (`barenet dashboard`). The files are for
    watching: one that cannot be written (disk full, directory gone) never stops the training.
    """

    def __init__(self, out: Path, epochs: int, interval: float = 1.0):
        self.out, self.epochs, self.interval = Path(out), epochs, interval

    def on_train_begin(self, state):
        self.state = state
        self._start = self._epoch_start = time.monotonic()
        self._epoch_seconds: list[float] = []              # this session's epochs, validation in
        self._losses, self._last, self._batches = 0.0, 0.0, None
        self.write("training", batch=0, batches=None, loss=None, eta=None)

    def on_batch_end(self, batch, logs):
        self._losses += logs["loss"]
        self._batches = logs["batches"]
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        per_batch = (now - self._epoch_start) / (batch + 1)
        epoch_left = (logs["batches"] - batch - 1) * per_batch
        per_epoch = (sum(self._epoch_seconds) / len(self._epoch_seconds)
                     if self._epoch_seconds else logs["batches"] * per_batch)
        eta = epoch_left + max(self.epochs - self.state.epoch - 1, 0) * per_epoch
        self.write("training", batch=batch + 1, batches=logs["batches"],
                   loss=self._losses / (batch + 1), eta=eta)

    def on_epoch_end(self, epoch, logs):
        now = time.monotonic()
        self._epoch_seconds.append(now - self._epoch_start)
        self._epoch_start, self._losses = now, 0.0
        self._write(HISTORY_FILE, self.state.history.rows)
        per_epoch = sum(self._epoch_seconds) / len(self._epoch_seconds)
        self.write("training", batch=self._batches, batches=self._batches, loss=logs["loss"],
                   eta=max(self.epochs - epoch - 1, 0) * per_epoch, done=epoch + 1)

    def on_train_end(self, state):
        self.write("evaluating", batch=None, batches=None, loss=None, eta=None,
                   done=state.epoch)

    def write(self, phase: str, *, batch, batches, loss, eta, done=None) -> None:
        """progress.json: `epoch` is the one training (1-based), or the last one done."""
        epoch = done if done is not None else self.state.epoch + 1
        self._write(PROGRESS_FILE, {
            "state": phase, "epoch": min(epoch, self.epochs), "epochs": self.epochs,
            "batch": batch, "batches": batches, "loss": loss,
            "elapsed": round(time.monotonic() - self._start, 2),
            "eta": None if eta is None else round(eta, 1),
            "updated": time.time(), "pid": os.getpid(), "host": platform.node()})
        self._last = time.monotonic()

    def _write(self, name: str, obj) -> None:
        try:
            write_json(self.out / name, obj)
        except OSError:
            pass

    def stopped(self, reason: str) -> None:
        """Mark the run interrupted (Ctrl-C, divergence), where the file can still be written."""
        try:
            progress = json.loads((self.out / PROGRESS_FILE).read_text())
            write_json(self.out / PROGRESS_FILE, {**progress, "state": "interrupted",
                                                  "reason": reason, "updated": time.time()})
        except (OSError, ValueError):
            pass
