"""`barenet sweep SPEC.toml`: many configurations as one Optuna study; every trial a run directory.

Optuna does the work: its storage (SQLite file by default, PostgreSQL for several machines)
holds the study, its samplers propose, its pruners stop, its heartbeat fails the trials of a
killed worker and RetryHeartbeatStaleTrialCallback runs them again once. This module only
turns a trial into `runs.train_run` and decides when the study holds enough trials.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from pathlib import Path

import click

from ..training import Callback
from .common import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, Failure
from .sweep_spec import Spec, SpecError, load_spec, suggest
from .sweep_study import (
    SWEEP_FILE,
    counted,
    make_storage,
    masked,
    open_study,
    quiet_optuna,
    sqlite_url,
    trial_dir,
)


class PruneOnValidation(Callback):
    """Reports val_accuracy to the trial after every epoch; stops training when Optuna prunes.

    Stopping (returning True) rather than raising lets train_run finish the run directory.
    """

    def __init__(self, trial):
        self.trial, self.pruned_at = trial, None

    def on_epoch_end(self, epoch, logs):
        stop_if_interrupted()
        self.trial.report(logs["val_accuracy"], epoch + 1)
        if self.trial.should_prune():
            self.pruned_at = epoch + 1
            return True
        return None


def _reason(exc: BaseException) -> str:
    """Why a trial failed, on one line: the exception's type and message."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_ctrl_c = threading.Event()


def _on_ctrl_c(signum, frame):
    _ctrl_c.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def remembering_ctrl_c():
    """Ctrl-C during the block is remembered as well as raised.

    Python loses a KeyboardInterrupt raised inside a finalizer ("Exception ignored in ..."),
    and a cleanup that fails while one unwinds replaces it with its own error, which the
    objective would record as an ordinary failed trial. Either way the sweep would go on and
    end with 0; with the flag, `stop_if_interrupted` stops it at the next epoch or trial.
    Only in the main thread, and only when SIGINT has Python's default handler.
    """
    ours = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    _ctrl_c.clear()
    if ours:
        signal.signal(signal.SIGINT, _on_ctrl_c)
    try:
        yield
    finally:
        if ours:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def stop_if_interrupted(cause: BaseException | None = None) -> None:
    """Raise KeyboardInterrupt if Ctrl-C came during `remembering_ctrl_c`, even if it was lost."""
    if _ctrl_c.is_set():
        raise KeyboardInterrupt from cause


class Objective:
    """trial -> validation accuracy of the trained run (the test set is never looked at here)."""

    def __init__(self, spec: Spec, out: Path, target: int, data_dir=None, label: str = ""):
        self.spec, self.out, self.target = spec, Path(out), target
        self.data_dir, self.label = data_dir, label
        self.current = None

    def __call__(self, trial) -> float:
        import optuna

        from .runs import train_run

        self.current = trial.number
        study = trial.study
        system_attrs = study._storage.get_trial_system_attrs(trial._trial_id)
        if "fixed_params" not in system_attrs:      # neither retried nor enqueued
            others = [t for t in counted(study.get_trials(deepcopy=False))
                      if t.number != trial.number]
            if len(others) >= self.target:
                trial.set_user_attr("surplus", True)
                study.stop()
                raise optuna.TrialPruned("surplus: the study was full when this trial began")
        params = suggest(trial, self.spec)
        run = trial_dir(self.out, trial.number)
        trial.set_user_attr("run", run.name)
        trial.set_user_attr("host", os.uname().nodename)
        if hasattr(os, "sched_getaffinity"):
            from threadpoolctl import threadpool_info
            trial.set_user_attr("cores", sorted(os.sched_getaffinity(0)))
            trial.set_user_attr("blas_threads", max([p["num_threads"] for p in threadpool_info()
                                                     if p.get("user_api") == "blas"] or [0]))
        prune = PruneOnValidation(trial)
        try:
            config = self.spec.config_for(params)
            trial.set_user_attr("config", config.to_dict())   # best.toml, on any machine
            metrics = train_run(config, run, data_dir=self.data_dir, callbacks=[prune],
                                progress=False)
        except Exception as exc:
            stop_if_interrupted(exc)
            reason = _reason(exc)
            trial.set_user_attr("fail_reason", reason)
            self._say(trial, f"failed: {reason}")
            return math.nan            # Optuna records the trial as FAIL; the sweep goes on
        trial.set_user_attr("train_seconds", metrics["train_seconds_total"])
        trial.set_user_attr("epochs", metrics["epochs_run"])
        value = metrics["val_accuracy"]
        if prune.pruned_at is not None:
            self._say(trial, f"pruned at epoch {prune.pruned_at} (val accuracy {value:.4f})")
            raise optuna.TrialPruned(f"pruned at epoch {prune.pruned_at}")
        self._say(trial, f"val accuracy {value:.4f} ({metrics['train_seconds_total']:.1f} s)")
        return value

    def _say(self, trial, what: str) -> None:
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in trial.params.items())
        click.echo(f"{self.label}trial {trial.number} {what}  [{shown}]", err=True)


def work(spec: Spec, url: str, name: str, out: Path, target: int, deadline: float | None,
         data_dir=None, worker: int = 0, label: str = "") -> int:
    """One worker: run trials until the study holds `target` finished ones (or the deadline).

    Waits for trials still running elsewhere; when their worker died, Optuna's heartbeat
    check fails them and the retry it enqueues is run here.
    """
    quiet_optuna()
    with remembering_ctrl_c():
        return _work(spec, url, name, out, target, deadline, data_dir, worker, label)


def _work(spec, url, name, out, target, deadline, data_dir, worker, label) -> int:
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    study = open_study(spec, url, name, worker)
    objective = Objective(spec, out, target, data_dir, label)
    while deadline is None or time.time() < deadline:
        fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        done = counted(trials)
        if waiting or len(done) < target:
            try:
                study.optimize(objective, n_trials=1, catch=())
                stop_if_interrupted()
            except KeyboardInterrupt:
                _retry_interrupted(study, objective.current)
                raise
            continue
        if not any(t.state == TrialState.RUNNING for t in done):
            return EXIT_OK
        time.sleep(min(spec.heartbeat_interval, 5))
    return EXIT_OK


def _retry_interrupted(study, number) -> None:
    """Ctrl-C: the trial Optuna just marked failed gets the same single retry as a killed one."""
    if number is None:
        return
    trial = study.get_trials(deepcopy=False)[number]
    callback = study._storage.get_heartbeat_stale_trial_callback()
    if (callback is not None and trial.state.name == "FAIL"
            and "fail_reason" not in trial.user_attrs):
        callback(study, trial)


def core_shares(cpus: list[int], jobs: int) -> list[list[int]]:
    """The cores of each of `jobs` workers: round-robin; with fewer cores than jobs, one each."""
    if not cpus:
        return [[] for _ in range(jobs)]
    if len(cpus) >= jobs:
        return [cpus[k::jobs] for k in range(jobs)]
    return [[cpus[k % len(cpus)]] for k in range(jobs)]


def _pinned_worker(k: int, jobs: int, args: tuple) -> None:
    """A worker process on its share of the cores, with as many BLAS threads as cores."""
    from threadpoolctl import threadpool_limits

    code = EXIT_FAIL
    try:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        if hasattr(os, "sched_setaffinity"):
            share = core_shares(sorted(os.sched_getaffinity(0)), jobs)[k]
            os.sched_setaffinity(0, share)
            threads = len(share)
        with threadpool_limits(threads):
            code = work(*args, worker=k, label=f"worker {k}: ")
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except Failure as exc:
        click.echo(f"error: worker {k}: {exc.format_message()}", err=True)
        code = exc.exit_code
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        os._exit(code)      # no atexit handlers of the parent run in a forked child


def run_workers(jobs: int, args: tuple) -> list[int]:
    """K forked worker processes (they inherit the loaded modules); their exit codes."""
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_pinned_worker, args=(k, jobs, args), name=f"sweep-{k}")
             for k in range(jobs)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.join()
        raise
    return [p.exitcode for p in procs]


@click.command()
@click.argument("spec_file", metavar="SPEC.toml", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False),
              help="Sweep directory: trial run directories, study.db, report "
                   "(default: runs/sweep-<spec name>).")
@click.option("--storage", help="Optuna storage URL, e.g. postgresql://user@host/db "
                                "(default: sqlite:///OUT/study.db).")
@click.option("--study", "study_name", help="Study name (default: the spec file's name).")
@click.option("--trials", type=click.IntRange(min=1),
              help="Trials the study should hold (default: the spec's; a grid: all of it).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="Start no new trial after this many seconds.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes on this machine, each pinned to its share of the cores.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="MNIST cache directory.")
def command(spec_file, out, storage, study_name, trials, timeout, jobs, data_dir):
    """Train many configurations as one Optuna study (grid, random or TPE; SQLite or PostgreSQL)."""
    try:
        spec = load_spec(spec_file)
        target = spec.target_trials(trials)
    except SpecError as exc:
        raise Failure(str(exc)) from None
    stem = Path(spec_file).stem
    out = Path(out) if out else Path("runs") / f"sweep-{stem}"
    if out.exists() and not out.is_dir():
        raise Failure(f"--out {out} is a file, not a directory")
    name = study_name or stem
    quiet_optuna()
    if storage is None:
        out.mkdir(parents=True, exist_ok=True)
        url = sqlite_url(out)
    else:
        url = storage
    storage = make_storage(url, spec.heartbeat_interval)
    open_study(spec, url, name, create=True, storage=storage)
    out.mkdir(parents=True, exist_ok=True)
    from .runs import write_json
    write_json(out / SWEEP_FILE, {"study": name, "storage": masked(url),
                                  "spec": str(Path(spec_file)), "target_trials": target})
    storage.engine.dispose()      # workers open their own connections
    deadline = time.time() + (timeout or spec.timeout) if (timeout or spec.timeout) else None
    click.echo(f"study {name!r} in {masked(url)}: {target} trials, sampler "
               f"{spec.sampler['name']}, pruner {spec.pruner['name']}, {jobs} worker(s); "
               f"trials in {out}/trial-NNNN", err=True)
    args = (spec, url, name, out, target, deadline, data_dir)
    start = time.time()
    try:
        if jobs == 1:
            code = work(*args)
        else:
            codes = run_workers(jobs, args)
            code = EXIT_INTERRUPTED if EXIT_INTERRUPTED in codes else EXIT_OK
            for k, c in enumerate(codes):
                if c not in (EXIT_OK, EXIT_INTERRUPTED):
                    click.echo(f"worker {k} ended with {'signal ' + str(-c) if c < 0 else c}; "
                               f"a trial it left running is failed by heartbeat and retried "
                               f"(by another worker, or when the same command runs again)",
                               err=True)
                    code = EXIT_FAIL
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED:
        click.echo(f"interrupted; run the same command again to resume study {name!r}", err=True)
        return code
    from .sweep_report import print_summary, write_sweep_report
    study = open_study(spec, url, name)
    click.echo(f"sweep wall time {time.time() - start:.0f} s", err=True)
    print_summary(study, out)
    write_sweep_report(study, out, spec)
    return code
