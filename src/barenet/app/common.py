"""What every command shares: exit codes, the one-line `Failure`, loading a MODEL argument and
finding the data set a model was trained on.

This module imports nothing from the rest of the app except the two leaf modules that hold the
names it resolves (`rundir`'s file names, `shipped`'s table), so any command can import it
without an import cycle.

Exit codes: 0 ok, 1 failure (data unavailable, training diverged, disk full), 2 bad input or
usage, 130 interrupted (Ctrl-C), 143 stopped by SIGTERM, 129 by SIGHUP.
"""

from __future__ import annotations

from pathlib import Path

import click

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class Failure(click.ClickException):
    """One-line error with an exit code; raised by commands, printed by cli.main()."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = code


class FiniteRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (FloatRange lets nan through: every
    comparison with nan is false)."""

    name = "finite float range"

    def convert(self, value, param, ctx):
        import math
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class RejectThreshold(FiniteRange):
    """A threshold in [0, 1], or `model`: the model's own default (model_reject)."""

    def convert(self, value, param, ctx):
        if value == MODEL_REJECT:
            return MODEL_REJECT
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            self.fail(f"{value!r} is not a threshold: give a finite number from 0 to 1, or "
                      f"'{MODEL_REJECT}' for the model's own", param, ctx)


MODEL_REJECT = "model"


def reject_option(help_text: str):
    """`--reject [T]`: a threshold in [0, 1]; the option alone (or `--reject model`) means the
    model's own default, resolved by model_reject once the model is loaded."""
    return click.option("--reject", type=RejectThreshold(0.0, 1.0), is_flag=False,
                        flag_value=MODEL_REJECT, default=None, metavar="[T]",
                        help=f"{help_text} (--reject alone: the model's calibrated threshold, "
                             f"else 0.9).")


def model_reject(reject, meta: dict) -> float | None:
    """The --reject value as a number: `model` becomes the threshold the run calibrated on
    its validation images (metadata "reject"), or metrics.DEFAULT_REJECT without one."""
    from ..metrics import DEFAULT_REJECT
    if reject != MODEL_REJECT:
        return reject
    threshold = (meta.get("reject") or {}).get("threshold")
    ok = isinstance(threshold, float) and 0.0 <= threshold <= 1.0
    return threshold if ok else DEFAULT_REJECT


def check_out_file(out: str | Path) -> Path:
    """An output file's path, refused up front (before any work) when its folder is missing."""
    path = Path(out)
    if not path.parent.is_dir():
        raise Failure(f"--out {out}: the folder {path.parent} does not exist")
    return path


def one_line(message) -> str:
    """Any message as one line (an exception's text may hold newlines)."""
    return " ".join(str(message).split())


def dataset_of(meta_or_config: dict | None) -> str:
    """The data set a model was trained on, from its metadata or its run's config dict."""
    meta_or_config = meta_or_config or {}
    config = meta_or_config.get("config", meta_or_config)
    if not isinstance(config, dict):
        return "mnist"
    data = config.get("data")
    return data.get("dataset", "mnist") if isinstance(data, dict) else "mnist"


def test_set(meta: dict, data_dir=None):
    """(dataset name, x_test, y_test) of the data set the model in `meta` was trained on."""
    from .. import data
    dataset = dataset_of(meta)
    _, (x_test, y_test) = data.load_dataset(dataset, data_dir)
    return dataset, x_test, y_test


def resolve_model_path(model: str | Path) -> Path:
    """MODEL may be a run directory (its model.safetensors), a model file, or the name of a
    shipped model (`barenet models`) when no file or directory has that name."""
    from ..serialize import ModelFileError
    from .rundir import CHECKPOINT_FILE, MODEL_FILE
    path = Path(model)
    if not path.exists():
        from .shipped import SHIPPED, shipped_path
        packaged = shipped_path(str(model))
        if packaged is not None:
            return packaged
        raise ModelFileError(f"{model}: no such run directory or model file, and not a "
                             f"shipped model ({', '.join(SHIPPED)}; see `barenet models`)")
    if path.is_dir():
        if (path / MODEL_FILE).exists():
            return path / MODEL_FILE
        if (path / CHECKPOINT_FILE).exists():         # a run stopped before its end
            raise ModelFileError(f"{model}: the run has no {MODEL_FILE} yet (training did "
                                 f"not finish); `barenet train --resume {model}` continues it")
        inside = sorted(p.parent for p in path.glob(f"*/{MODEL_FILE}"))
        if inside:
            shown = ", ".join(map(str, inside[:3])) + (", ..." if len(inside) > 3 else "")
            raise ModelFileError(f"{model}: not a run directory (no {MODEL_FILE}); the runs "
                                 f"in it: {shown}")
        raise ModelFileError(f"{model}: not a run directory (no {MODEL_FILE}): give a run "
                             f"directory written by `barenet train`, or a model file")
    return path


def load_model_arg(model_arg: str | None):
    """Load MODEL (run directory, model file or shipped name); None: the default shipped one.
    Returns (model, metadata)."""
    from ..serialize import load_model
    if model_arg is None:
        from .shipped import DEFAULT, shipped_path
        if shipped_path(DEFAULT) is None:
            raise Failure("no MODEL given and this installation ships no model: give a run "
                          "directory or a model file")
        model_arg = DEFAULT
    return load_model(resolve_model_path(model_arg))
