"""A training run on disk: data, model and optimizer from a config, checkpoints, run directory.

A run directory holds model.safetensors, config.json, history.json, metrics.json and
checkpoint.safetensors (model + optimizer + RNG state + history, rewritten atomically at the
end of every epoch), so an interrupted run resumes to the same weights bit for bit. While it
trains, history.json grows every epoch and progress.json says where the epoch is (both for
`barenet dashboard`); progress.json goes away when the model is saved. The directory is
claimed (locked, checked) before anything is read or written: rundir.py.
"""

from __future__ import annotations

import errno
import json
import platform
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..build import build_augment, build_loss, build_model, build_optimizer, build_schedule
from ..config import Config, from_dict
from ..inputspace import InputSpace
from ..layers import Dropout
from ..metrics import calibrated_reject, confusion_matrix, per_class_accuracy
from ..serialize import (
    NOT_MODEL_ARRAYS,
    atomic_write_bytes,
    load_arrays,
    model_metadata,
    save_arrays,
    save_model,
)
from ..training import (
    Callback,
    EarlyStopping,
    History,
    TrainingDiverged,
    TrainState,
    evaluate,
    fit,
    split_validation,
)
from .progress import HISTORY_FILE, PROGRESS_FILE, LiveFiles
from .rundir import (  # noqa: F401 - RunError and friends are used as runs.RunError
    CHECKPOINT_FILE,
    MODEL_FILE,
    RunBusy,
    RunDirectory,
    RunError,
    RunFailure,
    claim,
    started_run,
)


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def seeds_for(seed: int) -> tuple[np.random.Generator, ...]:
    """Independent generators for (validation split, init + dropout, shuffling)."""
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))


def split(x, y, validation: float, rng):
    """training.split_validation, with its complaint as a RunError for the CLI."""
    try:
        return split_validation(x, y, validation, rng)
    except ValueError as exc:
        raise RunError(f"data.validation: {exc}") from None


def _dropout_rngs(model) -> list[np.random.Generator]:
    return [layer.rng for layer in model.layers if isinstance(layer, Dropout)]


def save_checkpoint(path: Path, state: TrainState, config: Config) -> None:
    opt_arrays, opt_meta = state.optimizer.state_dict()
    arrays = dict(state.model.state_arrays())
    arrays.update({f"optimizer.{k}": v for k, v in opt_arrays.items()})
    meta = model_metadata(
        state.model, config=config.to_dict(), history=state.history.rows,
        checkpoint={"epoch": state.epoch, "optimizer": opt_meta, "base_lr": state.base_lr,
                    "shuffle_rng": state.rng.bit_generator.state,
                    "dropout_rngs": [g.bit_generator.state for g in _dropout_rngs(state.model)],
                    "plateau": state.plateau.state() if state.plateau else None})
    save_arrays(path, arrays, meta)


class Checkpoint(Callback):
    """Rewrites the checkpoint file atomically at the end of every epoch. A write that fails
    (disk full) leaves the previous checkpoint as it was and ends the run with one line."""

    def __init__(self, path: Path, config: Config, run: RunDirectory | None = None):
        self.path, self.config, self.run = path, config, run
        self.epoch: int | None = None                 # epoch of the checkpoint on disk

    def on_train_begin(self, state):
        self.state = state

    def on_epoch_end(self, epoch, logs):
        try:
            save_checkpoint(self.path, self.state, self.config)
        except OSError as exc:
            raise _write_failed(exc, self.path, self) from None
        self.epoch = self.state.epoch
        if self.run is not None:
            self.run.keep = True                       # from now on the directory is a run


def _write_failed(exc: OSError, path: Path, checkpoint: Checkpoint) -> Exception:
    """One line for a run file that could not be written, saying what is left and what next."""
    out = path.parent
    if checkpoint.epoch is not None:
        kept = f"the checkpoint of epoch {checkpoint.epoch} in {out} is intact"
        again = f"continue with: barenet train --resume {out}"
    elif checkpoint.run is not None and checkpoint.run.resume:
        kept, again = f"{out} is as it was", f"barenet train --resume {out}"
    else:
        kept, again = "no epoch had finished, so nothing was kept", "run the command again"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return RunFailure(f"{path}: the disk is full; {kept}; free some space, then {again}")
    reason = exc.strerror or type(exc).__name__
    message = f"{path}: cannot write it ({reason}); {kept}; when it can be written, {again}"
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        return RunError(message)
    return RunFailure(message)


def _flat(table: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_same_config(config: Config, saved: dict, checkpoint: Path) -> None:
    """--resume trains what the checkpoint holds: a config.json edited since (another
    architecture, optimizer, rate...) is refused, naming the first differences. Only
    training.epochs may differ (`--resume --epochs N` extends a run)."""
    try:
        saved = from_dict(saved).to_dict()           # the same defaults on both sides
    except Exception:                                 # noqa: BLE001 - compared as it is
        pass
    now, then = _flat(config.to_dict()), _flat(saved)
    differ = [k for k in sorted(now.keys() | then.keys())
              if k != "training.epochs" and now.get(k) != then.get(k)]
    if differ:
        shown = "; ".join(f"{k} = {json.dumps(now.get(k))} there, {json.dumps(then.get(k))} "
                          f"in the checkpoint" for k in differ[:3])
        more = f" (and {len(differ) - 3} more)" if len(differ) > 3 else ""
        raise RunError(f"{checkpoint.parent / 'config.json'} was changed after the run "
                       f"started: {shown}{more}; a resumed run continues the checkpoint's "
                       f"configuration: put config.json back, or train a new run")


class Prepared:
    """Everything a run needs in memory: data splits, model, optimizer, schedule, state."""

    def __init__(self, config: Config, data_dir=None, progress=None):
        from ..data import load_dataset

        self.config = config
        (x_train, y_train), (self.x_test, self.y_test) = load_dataset(
            config.data.dataset, data_dir, progress=progress)
        split_rng, init_rng, shuffle_rng = seeds_for(config.training.seed)
        (self.x_train, self.y_train), self.validation = split(
            x_train, y_train, config.data.validation, split_rng)
        n_in = int(np.prod(x_train.shape[1:]))
        self.model = build_model(config, n_in, 10, rng=init_rng)
        self.optimizer = build_optimizer(config, self.model.parameters())
        self.schedule, plateau = build_schedule(config)
        self.loss = build_loss(config)
        self.augment = build_augment(config)
        self.state = TrainState(self.model, self.optimizer, shuffle_rng, History(),
                                plateau=plateau)

    def restore(self, checkpoint: Path, saved=None) -> None:
        """The training state of `checkpoint` ((arrays, meta) when already read)."""
        arrays, meta = saved if saved is not None else load_arrays(checkpoint)
        ck = meta.get("checkpoint")
        if not ck:
            raise RunError(f"{checkpoint}: not a checkpoint (no training state in it)")
        opt = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("optimizer.")}
        try:
            self.model.load_state_arrays({k: v for k, v in arrays.items()
                                          if not k.startswith(NOT_MODEL_ARRAYS)})
            self.optimizer.load_state_dict(opt, ck["optimizer"])
            self.state.rng.bit_generator.state = ck["shuffle_rng"]
            for g, s in zip(_dropout_rngs(self.model), ck["dropout_rngs"]):
                g.bit_generator.state = s
            if self.state.plateau is not None and ck.get("plateau"):
                self.state.plateau.load_state(ck["plateau"])
            self.state.epoch = int(ck["epoch"])
            self.state.base_lr = float(ck["base_lr"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RunError(f"{checkpoint}: does not match the run's config.json "
                           f"({type(exc).__name__}: {exc}); was config.json edited?") from None
        self.state.history = History(meta.get("history", []))


def train_run(config: Config, out: Path, *, data_dir=None, callbacks=(), progress=None,
              resume: bool = False, report: bool = True) -> dict:
    """Train (or resume) the run in `out`; writes the run directory; returns metrics.

    The directory is claimed (locked, checked) before anything is read or written; a new run
    that fails before its first checkpoint leaves nothing behind (rundir.RunDirectory).
    """
    with claim(Path(out), resume=resume) as run_dir:
        return _train(config, run_dir, data_dir, callbacks, progress, report)


def _train(config: Config, run_dir: RunDirectory, data_dir, callbacks, progress,
           report: bool) -> dict:
    out = run_dir.path
    checkpoint = Checkpoint(out / CHECKPOINT_FILE, config, run_dir)
    saved = _saved_checkpoint(config, run_dir, checkpoint)
    # Data and model are built before config.json is written: a run that cannot start
    # (data unavailable, model too big, a bad value found late) leaves nothing behind.
    run = Prepared(config, data_dir, progress)
    if saved is not None:
        run.restore(checkpoint.path, saved)
    # On resume too: `train --resume --epochs N` may have extended the run.
    _write(out / "config.json", {**config.to_dict(), "barenet_version": __version__},
           checkpoint)
    history, early, train_time = _fit(run, out, checkpoint, callbacks)
    _write(out / HISTORY_FILE, history.rows, checkpoint)
    metrics = _test_metrics(run, history, early, train_time)
    extra = {}
    if run.validation is not None:      # the model's own "not sure" threshold, from held-out
        x_val, y_val = run.validation   # images (the test set stays untouched)
        extra["reject"] = metrics["reject"] = calibrated_reject(y_val,
                                                                run.model.predict_proba(x_val))
    _write(out / "metrics.json", metrics, checkpoint)
    # The training images' subspace goes into the model file: predict, serve and explore
    # answer "not sure" for inputs far from it (a scribble), whatever the model's confidence.
    if len(run.x_train) >= 3:
        run.model.input_space = InputSpace.fit(run.x_train)
    try:
        save_model(out / MODEL_FILE, run.model, config=config.to_dict(), history=history.rows,
                   metrics={k: metrics[k] for k in ("test_accuracy", "test_loss", "dataset")},
                   **extra)
    except OSError as exc:
        raise _write_failed(exc, out / MODEL_FILE, checkpoint) from None
    run_dir.keep = True
    (out / PROGRESS_FILE).unlink(missing_ok=True)
    if report:
        _write_report(out)
    return metrics


def _saved_checkpoint(config: Config, run_dir: RunDirectory, checkpoint: Checkpoint):
    """(arrays, meta) of the checkpoint a resumed run continues, None for a new run. Read and
    compared with `config` before any data is loaded or anything written."""
    if not (run_dir.resume and checkpoint.path.is_file()):
        return None
    saved = load_arrays(checkpoint.path)
    check_same_config(config, saved[1].get("config") or {}, checkpoint.path)
    checkpoint.epoch = int((saved[1].get("checkpoint") or {}).get("epoch", 0))
    return saved


def _fit(run: Prepared, out: Path, checkpoint: Checkpoint, callbacks):
    """training.fit with the run's callbacks (checkpoint, live files, early stopping);
    returns (history, the EarlyStopping or None, seconds). A run that stops says why in
    progress.json for the dashboard."""
    t = run.config.training
    live = LiveFiles(out, t.epochs)
    cbs = [checkpoint, live, *callbacks]
    early = None
    if t.early_stopping and run.validation is not None:
        early = EarlyStopping(run.model, "val_accuracy", t.early_stopping)
        cbs.insert(0, early)
    batch_size = t.batch_size or len(run.x_train)
    start = time.perf_counter()
    try:
        history = fit(run.model, run.loss, run.optimizer, run.x_train, run.y_train,
                      epochs=t.epochs, batch_size=batch_size, validation=run.validation,
                      callbacks=cbs, schedule=run.schedule, state=run.state,
                      augment=run.augment)
    except TrainingDiverged as exc:
        live.stopped(str(exc))
        raise TrainingDiverged(f"{exc}; {_diverged_note(checkpoint)}") from None
    except BaseException as exc:
        live.stopped("interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc))
        raise
    return history, early, time.perf_counter() - start


def _test_metrics(run: Prepared, history: History, early: EarlyStopping | None,
                  train_time: float) -> dict:
    """metrics.json: the trained model on the test set, and how the training went."""
    start = time.perf_counter()
    test = evaluate(run.model, run.x_test, run.y_test, loss=run.loss)
    predicted = run.model.predict(run.x_test)
    cm = confusion_matrix(run.y_test, predicted)
    metrics = {
        "dataset": run.config.data.dataset,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "per_class_accuracy": per_class_accuracy(cm).round(6).tolist(),
        "confusion_matrix": cm.tolist(),
        "epochs_run": len(history),
        "best_epoch": (early.best_epoch + 1) if early and early.best_epoch is not None else None,
        "train_seconds_this_session": round(train_time, 2),
        "train_seconds_total": round(sum(r.get("time", 0.0) for r in history.rows), 2),
        "evaluate_seconds": round(time.perf_counter() - start, 3),
        "machine": {"python": platform.python_version(), "numpy": np.__version__,
                    "processor": platform.machine()},
    }
    if history.rows and "val_accuracy" in history.rows[-1]:
        metrics["val_accuracy"] = history.rows[-1]["val_accuracy"]
        metrics["best_val_accuracy"] = max(r["val_accuracy"] for r in history.rows)
    return metrics


def _write(path: Path, obj, checkpoint: Checkpoint) -> None:
    try:
        write_json(path, obj)
    except OSError as exc:
        raise _write_failed(exc, path, checkpoint) from None


def _diverged_note(checkpoint: Checkpoint) -> str:
    if checkpoint.epoch:
        return (f"the last good checkpoint is {checkpoint.path} (epoch {checkpoint.epoch}); "
                f"resuming it would repeat the same steps: train a new run instead")
    return "no epoch had finished, so no checkpoint was written and nothing was kept"


def _write_report(out: Path) -> Path | None:
    """report.html for the run; its path, or None when none was written (matplotlib missing
    or any other problem: one line on stderr, the run still succeeds)."""
    from .report import write_report
    return write_report(out)


def load_run_config(run: Path) -> Config:
    path = Path(run) / "config.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{run}: no config.json; is this a run directory?") from None
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable ({exc})") from None
    except RecursionError:
        raise RunError(f"{path}: nested too deeply to be a barenet config") from None
    if not isinstance(raw, dict):
        raise RunError(f"{path}: not a barenet config (a JSON object is expected)")
    raw.pop("barenet_version", None)
    return from_dict(raw)


