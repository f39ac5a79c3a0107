"""The `barenet` command: the click group, where each subcommand lives, and main().

Every command is in its own module (train_cmd, predict_cmd, ... below); the others import
nothing from here. Exit codes (common.py): 0 ok, 1 failure (data unavailable, training
diverged, disk full), 2 bad input or usage, 130 interrupted (Ctrl-C), 143 stopped by SIGTERM,
129 by SIGHUP. Heavy modules are imported inside commands so `barenet --help` stays quick.
"""

from __future__ import annotations

import sys

import click

from .common import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, one_line
from .predict_cmd import evaluate, predict
from .train_cmd import train


def _user_errors():
    """Exception types whose message is a complete one-line explanation for the user."""
    from ..config import ConfigError
    from ..data.preprocess import ImageError
    from ..serialize import ModelFileError
    from .rundir import RunError
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
    "robustness": ("barenet.app.robustness:command",
                   "Accuracy curves as test images get noisier, rotated, blurred, attacked."),
    "embed": ("barenet.app.embed:command",
              "2-D map (PCA or t-SNE) of a layer's activations, by class."),
    "attack": ("barenet.app.attack:command",
               "Adversarial digit: the smallest change that flips the answer (FGSM, PGD)."),
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command runs.

    Listing commands (--help) uses the short help above, so FastAPI, textual and matplotlib
    are never imported just to print usage.
    """

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None or name not in LAZY_COMMANDS:
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
        rows += [(name, entry[1]) for name, entry in LAZY_COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="barenet", prog_name="barenet")
def cli():
    """barenet: neural networks from scratch in NumPy, and an MNIST digit recognizer."""


for command in (train, evaluate, predict):       # light modules: registered at once
    cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting (tests call main([...]))."""
    args = list(sys.argv[1:] if argv is None else argv)
    if argv is None and not args and sys.stdin.isatty() and sys.stdout.isatty():
        from .menu import run_menu  # `barenet` alone on a terminal
        return run_menu(main)
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
