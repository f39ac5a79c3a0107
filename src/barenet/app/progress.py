"""Progress display for training: a rich bar per epoch on a terminal, one line per epoch always."""

from __future__ import annotations

import sys

from ..training import Callback


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
