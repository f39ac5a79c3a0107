"""The `barenet` command: train, evaluate, predict, ...

Exit codes: 0 ok, 1 failure (data unavailable, training diverged, disk full), 2 bad input or
usage, 130 interrupted (Ctrl-C), 143 stopped by SIGTERM, 129 by SIGHUP. Heavy modules are
imported inside commands so `barenet --help` stays quick.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import (  # noqa: F401 - commands and tests import these from cli too
    EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Failure, dataset_of, load_model_arg, one_line,
)


def _user_errors():
    """Exception types whose message is a complete one-line explanation for the user."""
    from ..config import ConfigError
    from ..data.preprocess import ImageError
    from ..serialize import ModelFileError
    from .runs import RunError
    return (ConfigError, ModelFileError, RunError, ImageError)


# Commands that live in their own modules, imported only when used: "name": "module:attribute".
LAZY_COMMANDS = {
    "gradcheck": ("barenet.app.gradcheck_cmd:command",
                  "Check every layer's backward pass against numerical gradients."),
    "lr-find": ("barenet.app.lrfind:command", "Learning-rate range test: plot and suggestion."),
    "report": ("barenet.app.report:command", "Write report.html (plots, metrics) for a run."),
    "compare": ("barenet.app.compare:command", "Compare runs: config differences and curves."),
    "explore": ("barenet.app.explore:command", "Browse test images and predictions (terminal)."),
    "serve": ("barenet.app.server:command", "Draw-a-digit web page and JSON API."),
    "augment-preview": ("barenet.app.augment_preview:command",
                        "Picture of augmented digits for a config."),
    "models": ("barenet.app.shipped:command",
               "List the trained models that ship with barenet (usable by name)."),
    "ensemble": ("barenet.app.ensemble_cmd:command",
                 "Average several trained models into one model file."),
    "sweep": ("barenet.app.sweep:command",
              "Train many configurations as one Optuna study (grid, random, TPE)."),
    "sweep-report": ("barenet.app.sweep_report:command",
                     "Report, plots and best.toml of a sweep directory."),
    "export": ("barenet.app.export_cmd:command",
               "Export a model or ensemble to ONNX (onnxruntime serves it alone)."),
    "dashboard": ("barenet.app.dashboard:command",
                  "Watch runs train: live curves, progress and ETA in a browser."),
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command runs.

    Listing commands (--help) uses the short help above, so FastAPI, textual and matplotlib
    are never imported just to print usage.
    """

    def _available(self) -> dict[str, tuple[str, str]]:
        import importlib.util
        return {name: entry for name, entry in LAZY_COMMANDS.items()
                if importlib.util.find_spec(entry[0].split(":")[0]) is not None}

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *self._available()})

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None or name not in self._available():
            return command
        import importlib
        module, attribute = LAZY_COMMANDS[name][0].split(":")
        try:
            return getattr(importlib.import_module(module), attribute)
        except ModuleNotFoundError as exc:         # an optional extra the module imports
            from .extras import extra_of, stand_in
            extra = extra_of(exc.name)
            if extra is None:
                raise
            return stand_in(name, LAZY_COMMANDS[name][1], extra)

    def format_commands(self, ctx, formatter):
        rows = [(name, cmd.get_short_help_str(60)) for name, cmd in self.commands.items()]
        rows += [(name, entry[1]) for name, entry in self._available().items()]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="barenet", prog_name="barenet")
def cli():
    """barenet: neural networks from scratch in NumPy, and an MNIST digit recognizer."""


def _default_out(dataset: str) -> Path:
    import time
    return Path("runs") / f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


@cli.command()
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


_load_model = load_model_arg


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _is_image_file(arg: str | None) -> bool:
    """An image's name (model files are .safetensors, runs are directories)."""
    return (arg is not None and Path(arg).suffix.lower() in IMAGE_SUFFIXES
            and not Path(arg).is_dir())


def _test_set(meta: dict, data_dir):
    from ..data import load_dataset
    dataset = dataset_of(meta)
    _, (x_test, y_test) = load_dataset(dataset, data_dir)
    return dataset, x_test, y_test


@cli.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="MNIST cache directory.")
def evaluate(model, as_json, data_dir):
    """Test accuracy, per-class precision/recall/F1, calibration and the confusion matrix."""
    import warnings

    import numpy as np

    from ..metrics import classification_report, format_report_table

    net, meta = _load_model(model)
    dataset, x_test, y_test = _test_set(meta, data_dir)
    with warnings.catch_warnings():     # overflow is checked below (a filter, not errstate:
        warnings.simplefilter("ignore", RuntimeWarning)     # the BLAS row threads see it)
        probs = net.predict_proba(x_test)
    if not np.isfinite(probs).all():      # finite weights so large that the logits overflow
        raise Failure(f"{model}: the model's outputs are not finite numbers (its weights "
                      f"overflow); the model file is damaged")
    report = classification_report(y_test, probs)
    if as_json:
        # Strict JSON: a NaN or infinity any metric might hold is written as null.
        strict = json.loads(json.dumps(report), parse_constant=lambda _: None)
        click.echo(json.dumps({"dataset": dataset, **strict}, allow_nan=False))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{dataset}[/] test set: {report['n']} images, accuracy "
                  f"[bold]{report['accuracy']:.4f}[/], log loss {report['log_loss']:.4f}, "
                  f"ECE {report['ece']:.4f}")
    click.echo(format_report_table(report))
    cm = report["confusion_matrix"]
    table = Table(title="confusion matrix (rows: true, columns: predicted)")
    table.add_column("true", justify="right")
    for k in range(len(cm)):
        table.add_column(str(k), justify="right", no_wrap=True, min_width=4)
    for k, row in enumerate(cm):
        cells = [f"[bold]{v}[/]" if j == k else (str(v) if v else "[dim]0[/]")
                 for j, v in enumerate(row)]
        table.add_row(str(k), *cells)
    console.print(table)
    return EXIT_OK


@cli.command()
@click.argument("model", required=False)
@click.argument("images", nargs=-1, type=click.Path())
@click.option("--index", "indices", type=int, multiple=True,
              help="Test-set image index (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="MNIST cache directory.")
def predict(model, images, indices, as_json, data_dir):
    """Classify test images by --index, or image files (PNG/JPEG, any size).

    MODEL is a run directory, a model file or a shipped model's name (`barenet models`); left
    out (`barenet predict digit.png`), the default shipped model answers. A file that cannot
    be classified is named on stderr with the reason; the others are still classified, and
    the exit code is 2 when any failed.
    """
    import warnings

    import numpy as np

    from ..metrics import top_k

    if _is_image_file(model):           # `barenet predict a.png b.png`: no MODEL given
        model, images = None, (model, *images)
    if not images and not indices:
        raise Failure("give --index I (test-set image) or one or more image files")
    for i in indices:
        if i < 0:
            raise Failure(f"--index {i} is negative: test images are numbered from 0")
    net, meta = _load_model(model)
    inputs, names, truths, errors = [], [], [], {}
    if indices:
        dataset, x_test, y_test = _test_set(meta, data_dir)
        for i in indices:
            if i >= len(x_test):
                raise Failure(f"--index {i} is out of range: the {dataset} test set has "
                              f"{len(x_test)} images (0-{len(x_test) - 1})")
            inputs.append(x_test[i])
            names.append(f"test[{i}]")
            truths.append(int(y_test[i]))
    if images:
        from ..data.preprocess import ImageError, load_digit, preprocess_image
        for path in images:
            names.append(str(path))
            truths.append(None)
            if not Path(path).is_file():
                errors[len(names) - 1] = f"{path}: no such image file"
                continue
            try:
                image = load_digit(path)          # bounded before decoding; errors name the file
                inputs.append(preprocess_image(image))
            except ImageError as exc:
                errors[len(names) - 1] = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
    with warnings.catch_warnings():     # overflow is checked below (a filter, not errstate:
        warnings.simplefilter("ignore", RuntimeWarning)     # the BLAS row threads see it)
        probs = net.predict_proba(np.stack(inputs)) if inputs else np.zeros((0, 0))
    if not np.isfinite(probs).all():      # finite weights so large that the logits overflow
        raise Failure(f"{model or 'the default model'}: the model's outputs are not finite "
                      f"numbers (its weights overflow); the model file is damaged")
    probs = iter(probs)
    if as_json:
        rows = []
        for k, name in enumerate(names):
            if k in errors:
                rows.append({"input": name, "error": errors[k]})
                continue
            p = next(probs)
            rows.append({"input": name, "label": int(p.argmax()),
                         "probabilities": [round(float(v), 6) for v in p]})
        click.echo(json.dumps(rows, allow_nan=False))
        return EXIT_USAGE if errors else EXIT_OK
    for k, (name, truth) in enumerate(zip(names, truths)):
        if k in errors:
            click.echo(f"error: {errors[k]}", err=True)
            continue
        (cls,), (pr,) = top_k(next(probs)[None], 3)
        guesses = "  ".join(f"{c}: {p:6.2%}" for c, p in zip(cls, pr))
        label = f" (true {truth})" if truth is not None else ""
        click.echo(f"{name}{label} -> {cls[0]}    top-3  {guesses}")
    if errors and len(names) > 1:
        click.echo(f"error: {len(errors)} of {len(names)} images could not be classified",
                   err=True)
    return EXIT_USAGE if errors else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting (tests call main([...]))."""
    args = list(sys.argv[1:] if argv is None else argv)
    if argv is None and not args and sys.stdin.isatty() and sys.stdout.isatty():
        from .menu import run_menu  # `barenet` alone on a terminal
        return run_menu()
    try:
        result = cli.main(args=args, prog_name="barenet", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.UsageError as exc:
        exc.show()
        return EXIT_USAGE
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        return exc.exit_code
    except _user_errors() as exc:
        click.echo(f"error: {one_line(exc)}", err=True)
        return EXIT_USAGE
    except Exception as exc:
        from ..data import DataError
        if isinstance(exc, DataError):
            click.echo(f"error: {one_line(exc)}", err=True)
            return EXIT_FAIL
        return _last_resort(exc)
    return result if isinstance(result, int) else EXIT_OK


def _last_resort(exc: BaseException) -> int:
    """An error no command turned into a sentence: still one line and an exit code, never a
    traceback (BARENET_DEBUG=1 re-raises it for a developer). Errors of the system and of the
    user's paths (permissions, no such file) are exit 2; the rest (disk full, out of memory,
    a bug) exit 1."""
    import errno
    import os
    if os.environ.get("BARENET_DEBUG", "").strip() not in ("", "0"):
        raise exc
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        what = exc.strerror or one_line(exc) or type(exc).__name__
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            click.echo(f"error: {where}{what}: the disk is full; free some space and run the "
                       f"command again (files already written were left intact)", err=True)
            return EXIT_FAIL
        user = isinstance(exc, (PermissionError, FileNotFoundError, NotADirectoryError,
                                IsADirectoryError, FileExistsError))
        hint = "; check the path and its permissions" if user else ""
        click.echo(f"error: {where}{what}{hint}", err=True)
        return EXIT_USAGE if user else EXIT_FAIL
    if isinstance(exc, MemoryError):
        click.echo("error: out of memory; try a smaller model, a smaller --batch-size, or a "
                   "machine with more memory", err=True)
        return EXIT_FAIL
    if isinstance(exc, RecursionError):
        click.echo("error: input nested too deeply to process", err=True)
        return EXIT_USAGE
    click.echo(f"error: internal error ({type(exc).__name__}: {one_line(exc)[:300]}); this is a "
               f"bug in barenet: please report it (BARENET_DEBUG=1 shows the traceback)",
               err=True)
    return EXIT_FAIL


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
