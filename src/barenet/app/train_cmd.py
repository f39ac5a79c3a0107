"""`barenet train`: a run directory from a config, and what surrounds it on the terminal:
--resume, --seeds, --live (the dashboard in a background thread), and Ctrl-C / SIGTERM /
SIGHUP ending a run with one line on how to continue it.

The training itself is runs.train_run; this module only turns options into a config and
the outcome into messages and exit codes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, Failure, one_line


def _default_out(dataset: str) -> Path:
    import time
    return Path("runs") / f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML run configuration (default: the built-in default network).")
@click.option("--dataset", type=click.Choice(["mnist", "fashion-mnist"]), help="Dataset.")
@click.option("--epochs", type=int, help="Number of epochs.")
@click.option("--batch-size", type=int, help="Mini-batch size (0 = full batch).")
@click.option("--lr", type=float, help="Learning rate.")
@click.option("--seed", type=int, help="Seed for split, init, shuffling and dropout.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any config key, e.g. --set optimizer.lr=0.01 (repeatable).")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Where the MNIST files are cached (default: $BARENET_DATA_DIR or user cache).")
@click.option("--out", type=click.Path(), help="Run directory (default: runs/<dataset>-<time>).")
@click.option("--resume", type=click.Path(), help="Continue the interrupted run in this directory.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train with this many seeds (seed, seed+1, ...) and report mean and spread.")
@click.option("--quiet", "-q", is_flag=True, help="No per-epoch output.")
@click.option("--live", is_flag=True,
              help="Watch it in a browser: starts `barenet dashboard` for the run's parent "
                   "directory on a free port, prints its URL and opens it.")
def train(config_file, dataset, epochs, batch_size, lr, seed, overrides, data_dir, out, resume,
          seeds, quiet, live):
    """Train a network and write a run directory (model, config, history, metrics)."""
    from ..config import load_config

    if resume:
        if config_file or overrides or out or seeds > 1:
            raise Failure("--resume continues a run as configured; "
                          "drop --config/--set/--out/--seeds")
        out_dir, config = Path(resume), None
    else:
        sets = list(overrides)
        for key, value in (("data.dataset", dataset and f'"{dataset}"'),
                           ("training.epochs", epochs), ("training.batch_size", batch_size),
                           ("optimizer.lr", lr), ("training.seed", seed)):
            if value is not None:
                sets.append(f"{key}={value}")
        config = load_config(config_file, sets)
        out_dir = Path(out) if out else _default_out(config.data.dataset)
    with _signals_as_interrupts():
        try:
            return _train(config, out_dir, resume, seeds, data_dir, quiet, live,
                          {"--dataset": dataset, "--batch-size": batch_size, "--lr": lr,
                           "--seed": seed}, epochs)
        except KeyboardInterrupt as exc:
            return _interrupted(exc, out_dir, seeds)


# SIGTERM (kill, a scheduler's stop) and SIGHUP (the terminal closed) stop a run like Ctrl-C:
# the checkpoint of the last finished epoch stays, one line says how to resume. The exit code
# is the shell's 128 + signal: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP.
class _Stopped(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _signals_as_interrupts():
    import contextlib
    import signal
    import threading

    @contextlib.contextmanager
    def installed():
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        wanted = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])

        def stop(signum, frame):
            for s in wanted:               # a second signal must not break the cleanup
                signal.signal(s, signal.SIG_IGN)
            raise _Stopped(signum)

        before = {s: signal.signal(s, stop) for s in wanted}
        try:
            yield
        finally:
            for s, handler in before.items():
                signal.signal(s, handler)

    return installed()


def _interrupted(exc: KeyboardInterrupt, out_dir: Path, seeds: int) -> int:
    """The one line after Ctrl-C / SIGTERM / SIGHUP: what is left of the run, what next."""
    import signal

    from .runs import CHECKPOINT_FILE, started_run
    if isinstance(exc, _Stopped):
        what, code = f"stopped by {signal.Signals(exc.signum).name}", 128 + exc.signum
    else:
        what, code = "interrupted", EXIT_INTERRUPTED
    if seeds > 1:
        done = len(list(out_dir.glob("seed-*/model.safetensors")))
        click.echo(f"\n{what}; {done} of the {seeds} runs in {out_dir} had finished", err=True)
    elif (out_dir / CHECKPOINT_FILE).is_file():
        click.echo(f"\n{what}; the checkpoint of the last finished epoch is in {out_dir}; "
                   f"continue with: barenet train --resume {out_dir}", err=True)
    elif started_run(out_dir):
        click.echo(f"\n{what} before its first epoch finished; barenet train --resume "
                   f"{out_dir} starts it again", err=True)
    else:
        click.echo(f"\n{what} before the first epoch finished; nothing was kept", err=True)
    return code


def _train(config, out_dir: Path, resume, seeds: int, data_dir, quiet: bool, live: bool,
           asked: dict, epochs) -> int:
    """train, with the run directory claimed (locked) from before its config is read."""
    from ..training import TrainingDiverged
    from . import runs
    from .progress import ProgressPrinter

    url = _start_dashboard(out_dir if seeds > 1 else out_dir.parent) if live else None
    try:
        if seeds > 1:
            return _linger(url, _train_seeds(config, out_dir, seeds, data_dir, quiet))
        with runs.claim(out_dir, resume=bool(resume)):
            if resume:
                config = _resumed_config(out_dir, asked, epochs)
                if not quiet and not (out_dir / runs.CHECKPOINT_FILE).is_file():
                    click.echo(f"{out_dir}: no epoch had finished (no checkpoint); training "
                               f"starts again from epoch 1", err=True)
            callbacks = [] if quiet else [ProgressPrinter(config.training.epochs)]
            if not quiet:
                click.echo(f"run directory: {out_dir}", err=True)
            metrics = runs.train_run(config, out_dir, data_dir=data_dir, callbacks=callbacks,
                                     progress=None if not quiet else False,
                                     resume=bool(resume), report=False)
            click.echo(f"test accuracy {metrics['test_accuracy']:.4f}  test loss "
                       f"{metrics['test_loss']:.4f}  ({metrics['train_seconds_total']:.1f} s "
                       f"training)")
            click.echo(f"saved {out_dir}/model.safetensors, config.json, history.json, "
                       f"metrics.json")
            report = runs._write_report(out_dir)
    except TrainingDiverged as exc:
        raise Failure(f"training stopped: {exc}", EXIT_FAIL) from None
    except runs.RunFailure as exc:
        raise Failure(one_line(exc), EXIT_FAIL) from None
    if report is not None:
        click.echo(f"report: {report}")
    return _linger(url, EXIT_OK)


def _start_dashboard(root: Path) -> str:
    """train --live: the dashboard of `root` in a background thread; its URL printed, and
    opened where there is a graphical browser. Needs the web extra (checked before training)."""
    from .extras import require
    require("web", "train --live")
    from .dashboard import open_in_browser, start_in_background
    root.mkdir(parents=True, exist_ok=True)
    try:
        url, _ = start_in_background(root)
    except OSError as exc:
        raise Failure(f"--live: {exc}", EXIT_FAIL) from None
    click.echo(f"live view: {url}  (barenet dashboard {root})", err=True)
    open_in_browser(url)
    return url


def _linger(url: str | None, code: int) -> int:
    """After a --live run on a terminal, keep the page up until the user is done with it."""
    if url and code == EXIT_OK and sys.stdin.isatty():
        click.echo(f"the live view stays at {url}; press Enter to stop it", err=True)
        try:
            input()
        except (EOFError, KeyboardInterrupt):
            pass
    return code


# What --resume may change: (config section, key) per option; --epochs is decided apart.
RESUME_FIXED = {"--dataset": ("data", "dataset"), "--batch-size": ("training", "batch_size"),
                "--lr": ("optimizer", "lr"), "--seed": ("training", "seed")}


def _resumed_config(run: Path, asked: dict, epochs: int | None):
    """The run's configuration for --resume. Options given must equal the run's (they cannot
    change half-way), except --epochs: at least the epochs done, and only where the schedule
    does not depend on the number of epochs (cosine and one-cycle are fitted to it, and their
    rates so far would not be those of a run of the new length)."""
    from ..config import replace
    from ..serialize import load_arrays
    from .runs import CHECKPOINT_FILE, load_run_config

    config = load_run_config(run)
    for option, value in asked.items():
        section, key = RESUME_FIXED[option]
        current = getattr(getattr(config, section), key)
        if value is not None and value != current:
            raise Failure(f"{option} {value}: a resumed run keeps its {section}.{key} = "
                          f"{current}; train a new run (another --out) to change it")
    if epochs is None or epochs == config.training.epochs:
        return config
    checkpoint = run / CHECKPOINT_FILE           # none: stopped before its first epoch ended
    done = (int((load_arrays(checkpoint)[1].get("checkpoint") or {}).get("epoch", 0))
            if checkpoint.is_file() else 0)
    if epochs < done:
        raise Failure(f"--epochs {epochs}: the run has already trained {done} epochs")
    schedule = config.schedule.name
    if schedule in ("cosine", "onecycle"):
        raise Failure(f"--epochs {epochs}: the run's {schedule} schedule is fitted to its "
                      f"{config.training.epochs} epochs and cannot be stretched; train a new "
                      f"run with --epochs {epochs}")
    return replace(config, "training", epochs=epochs)


def _train_seeds(config, out_dir: Path, seeds: int, data_dir, quiet: bool) -> int:
    """Train seeds seed..seed+n-1 into out_dir/seed-K; report test accuracy mean +- std.
    out_dir is claimed for the whole: refused when in use or holding anything already."""
    import statistics

    from ..config import replace
    from .progress import ProgressPrinter
    from .runs import claim, train_run, write_json

    first = config.training.seed
    results = []
    with claim(out_dir):
        for k in range(first, first + seeds):
            run_config = replace(config, "training", seed=k)
            run_dir = out_dir / f"seed-{k}"
            if not quiet:
                click.echo(f"seed {k}: {run_dir}", err=True)
            callbacks = [] if quiet else [ProgressPrinter(config.training.epochs)]
            metrics = train_run(run_config, run_dir, data_dir=data_dir, callbacks=callbacks,
                                progress=None if not quiet else False)
            results.append({"seed": k, "run": str(run_dir),
                            "test_accuracy": metrics["test_accuracy"],
                            "train_seconds": metrics["train_seconds_total"]})
            click.echo(f"seed {k}: test accuracy {metrics['test_accuracy']:.4f} "
                       f"({metrics['train_seconds_total']:.1f} s training)")
        accuracies = [r["test_accuracy"] for r in results]
        mean, std = statistics.mean(accuracies), statistics.stdev(accuracies)
        summary = {"seeds": results, "test_accuracy_mean": mean, "test_accuracy_std": std,
                   "train_seconds_mean": statistics.mean(r["train_seconds"] for r in results)}
        write_json(out_dir / "seeds.json", summary)
    click.echo(f"test accuracy over {seeds} seeds: {mean:.4f} ± {std:.4f} (sample std); "
               f"summary in {out_dir / 'seeds.json'}")
    return EXIT_OK
