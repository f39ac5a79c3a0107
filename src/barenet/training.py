"""Mini-batch training: fit, evaluate, validation split, History and callbacks.

The loop is one short function. It prints nothing; progress bars, checkpoints and early
stopping are callbacks. Shuffling permutes indices, never the data.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from .init import as_rng
from .losses import softmax_cross_entropy
from .model import PIXEL_SCALE, Sequential
from .optim import Optimizer, ReduceOnPlateau, Schedule
from .parallel import SplitBatch, training_parts

LossFn = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the model's weights are no longer usable."""


class History:
    """Per-epoch logs: `rows` is a list of dicts; `history[key]` is that key's list, Keras-style."""

    def __init__(self, rows: list[dict] | None = None):
        self.rows: list[dict] = list(rows or [])

    def append(self, logs: dict) -> None:
        self.rows.append(dict(logs))

    @property
    def history(self) -> dict[str, list]:
        keys = [k for row in self.rows for k in row]
        return {k: [row.get(k) for row in self.rows] for k in dict.fromkeys(keys)}

    def __getitem__(self, key: str) -> list:
        return [row.get(key) for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)


class Callback:
    """Hooks called by fit. on_epoch_end may return True to stop training."""

    def on_train_begin(self, state: TrainState) -> None:
        pass

    def on_batch_end(self, batch: int, logs: dict) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict) -> bool | None:
        return None

    def on_train_end(self, state: TrainState) -> None:
        pass


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved for `patience` epochs; can restore the best weights."""

    def __init__(self, model: Sequential, monitor: str = "val_accuracy", patience: int = 5,
                 mode: str | None = None, min_delta: float = 0.0, restore_best: bool = True):
        self.model, self.monitor, self.patience = model, monitor, int(patience)
        self.mode = mode or ("max" if "acc" in monitor else "min")
        self.min_delta, self.restore_best = float(min_delta), restore_best
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict[str, np.ndarray] | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_epoch_end(self, epoch, logs):
        value = logs.get(self.monitor)
        if value is None:
            raise KeyError(f"early stopping monitors {self.monitor!r}, which the logs lack "
                           f"(have: {', '.join(logs)}); is there a validation set?")
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self.best_state = copy.deepcopy(self.model.state_arrays())
            return None
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return None

    def on_train_end(self, state):
        if self.restore_best and self.best_state is not None and self.stopped_epoch is not None:
            self.model.load_state_arrays(self.best_state)


class TrainState:
    """What fit works on; passed to callbacks so checkpoints can save all of it."""

    def __init__(self, model, optimizer, rng, history, epoch=0, base_lr=None, plateau=None):
        self.model: Sequential = model
        self.optimizer: Optimizer = optimizer
        self.rng: np.random.Generator = rng
        self.history: History = history
        self.epoch = epoch                     # epochs completed
        self.base_lr = optimizer.lr if base_lr is None else base_lr
        self.plateau: ReduceOnPlateau | None = plateau


def split_validation(x: np.ndarray, y: np.ndarray, fraction: float, rng=None):
    """Seeded random split: ((x_train, y_train), (x_val, y_val)); 0 gives no val set.

    fraction < 1 is a share of the images; a whole number >= 1 is a count of images.
    """
    if fraction < 0 or (fraction >= 1 and not float(fraction).is_integer()):
        raise ValueError(f"validation must be a fraction in [0, 1) or a whole count, "
                         f"got {fraction}")
    n_val = int(fraction) if fraction >= 1 else int(round(len(x) * fraction))
    if n_val >= len(x):
        raise ValueError(f"validation asks for {n_val} images but there are only {len(x)}")
    if n_val == 0:
        return (x, y), None
    order = as_rng(rng).permutation(len(x))
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    return (x[train], y[train]), (x[val], y[val])


def evaluate(model: Sequential, x: np.ndarray, labels: np.ndarray, *,
             loss: LossFn = softmax_cross_entropy, batch_size: int = 10_000) -> dict[str, float]:
    """Mean loss and accuracy in eval mode (model.logits restores the model's mode after)."""
    total_loss, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = model.logits(x[i:i + batch_size], batch_size)
        yb = labels[i:i + batch_size]
        batch_loss, _ = loss(logits, yb)
        total_loss += batch_loss * len(yb)
        correct += int((logits.argmax(axis=1) == yb).sum())
    n = max(len(x), 1)
    return {"loss": total_loss / n, "accuracy": correct / n}


def train_step(model: Sequential, loss: LossFn, optimizer: Optimizer, x: np.ndarray,
               y: np.ndarray) -> tuple[float, int]:
    """One gradient step on a batch x (N, ...), labels y (N,): (mean loss, correct predictions).

    A non-finite loss leaves the weights as they were (fit then stops with TrainingDiverged).
    """
    logits = model.forward(x)                           # (N, K)
    batch_loss, grad = loss(logits, y)                  # grad: d loss / d logits, (N, K)
    if math.isfinite(batch_loss):
        model.backward(grad)                            # fills every Parameter.grad
        optimizer.step()
    return batch_loss, int(np.count_nonzero(logits.argmax(axis=1) == y))


def fit(model: Sequential, loss: LossFn, optimizer: Optimizer, x: np.ndarray, y: np.ndarray, *,
        epochs: int, batch_size: int = 128, validation: tuple | None = None,
        callbacks: Sequence[Callback] = (), rng=None, schedule: Schedule | None = None,
        plateau: ReduceOnPlateau | None = None, state: TrainState | None = None,
        augment: Callable | None = None) -> History:
    """Train for `epochs` (total, counting any already done in `state`) and return the History.

    x: uint8 images or float inputs (N, ...); y: int labels (N,). A `state` from a checkpoint
    continues where it stopped: same shuffles, same dropout masks, same weights, bit for bit.
    """
    if batch_size <= 0 or epochs < 0:
        raise ValueError("batch_size must be > 0 and epochs >= 0")
    if state is None:
        state = TrainState(model, optimizer, as_rng(rng), History(), plateau=plateau)
    model.train()
    for cb in callbacks:
        cb.on_train_begin(state)
    batches = Batches(x, y, batch_size)
    # Conv models train each batch as one part per core when they can (parallel.py).
    parts = training_parts(model, batch_size)
    split = SplitBatch(model, parts, whole_step=train_step) if parts > 1 else None
    # A diverging run is reported once, by the finiteness checks below, not by a stream of
    # overflow warnings from every ufunc on the way there.
    with np.errstate(over="ignore", invalid="ignore"), split or contextlib.nullcontext():
        step = split.train_step if split else train_step
        while state.epoch < epochs:
            epoch, start = state.epoch, time.perf_counter()
            sum_loss, correct = 0.0, 0
            for b, (xb, yb) in enumerate(batches.shuffled(state.rng)):
                _set_learning_rate(optimizer, state, schedule, epoch, b / len(batches))
                if augment is not None:
                    xb = augment(xb, state.rng)
                batch_loss, batch_correct = step(model, loss, optimizer, xb, yb)
                if not math.isfinite(batch_loss):
                    raise TrainingDiverged(
                        f"loss became {batch_loss} at epoch {epoch + 1}, batch {b + 1}; "
                        f"lower the learning rate (now {optimizer.lr:g}) or clip gradients")
                sum_loss += batch_loss * len(yb)
                correct += batch_correct
                for cb in callbacks:
                    cb.on_batch_end(b, {"loss": batch_loss, "batch": b, "batches": len(batches)})
            _check_weights(model, optimizer, epoch)
            logs = {"epoch": epoch + 1, "loss": sum_loss / len(x), "accuracy": correct / len(x),
                    "lr": optimizer.lr}
            if validation is not None:
                val = evaluate(model, validation[0], validation[1], loss=loss)
                logs["val_loss"], logs["val_accuracy"] = val["loss"], val["accuracy"]
            logs["time"] = time.perf_counter() - start
            if state.plateau is not None:
                state.plateau.update(logs.get("val_loss", logs["loss"]), state.base_lr)
            state.history.append(logs)
            state.epoch = epoch + 1
            if any([cb.on_epoch_end(epoch, logs) for cb in callbacks]):    # every one is called
                break
    for cb in callbacks:
        cb.on_train_end(state)
    model.eval()
    return state.history


def _set_learning_rate(optimizer, state: TrainState, schedule: Schedule | None, epoch: int,
                       progress: float) -> None:
    """The schedule's rate at `epoch` + `progress` (0 to 1), times the plateau's reduction."""
    scale = state.plateau.scale if state.plateau else 1.0
    if schedule is not None:
        t = epoch + (progress if schedule.per_batch else 0.0)
        optimizer.lr = state.base_lr * scale * schedule.factor(t)
    elif state.plateau is not None:
        optimizer.lr = state.base_lr * scale


def _check_weights(model: Sequential, optimizer: Optimizer, epoch: int) -> None:
    # The last step of an epoch can overflow the weights with every loss still finite;
    # caught here, before callbacks would checkpoint them as "the last good" epoch.
    if not all(np.isfinite(p.data).all() for p in model.parameters()):
        raise TrainingDiverged(
            f"the weights became infinite or NaN at the end of epoch {epoch + 1}; lower "
            f"the learning rate (now {optimizer.lr:g}) or clip gradients")


class Batches:
    """Shuffled mini-batches (x[idx], y[idx]) of a data set, gathered into buffers allocated
    once; uint8 images arrive as float32 pixels in [0, 1]. Shuffling permutes indices only.
    The batches yielded are views of those buffers, valid until the next one.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.xb = np.empty((batch_size, *x.shape[1:]), dtype=np.float32)
        self.raw = np.empty_like(self.xb, dtype=x.dtype) if x.dtype == np.uint8 else None
        self.yb = np.empty(batch_size, dtype=y.dtype)
        self.order = np.arange(len(x))

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def shuffled(self, rng: np.random.Generator):
        self.order[:] = np.arange(len(self.x))
        rng.shuffle(self.order)
        for b in range(len(self)):
            idx = self.order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self._gather(idx)

    def _gather(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = len(idx)
        # mode="clip": with out= the default mode="raise" copies through a bounds-checked
        # buffer; a slice of a permutation needs no check.
        if self.raw is not None:
            np.take(self.x, idx, axis=0, out=self.raw[:m], mode="clip")
            # uint8 -> float32 as a plain cast, then an in-place float32 multiply: two
            # SIMD loops instead of one mixed-type one, and bit for bit as_input's numbers.
            np.copyto(self.xb[:m], self.raw[:m])
            self.xb[:m] *= np.float32(PIXEL_SCALE)
        else:
            np.take(self.x, idx, axis=0, out=self.xb[:m], mode="clip")
        np.take(self.y, idx, out=self.yb[:m], mode="clip")
        return self.xb[:m], self.yb[:m]
