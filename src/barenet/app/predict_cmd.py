"""`barenet evaluate` and `barenet predict`: a trained model on its test set or on image files.

Loading the model (run directory, model file or shipped name) is common.load_model_arg;
the metrics are barenet.metrics, the image decoding barenet.data.preprocess.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..metrics import answered
from .common import (
    EXIT_OK,
    EXIT_USAGE,
    Failure,
    load_model_arg,
    model_reject,
    reject_option,
    test_set,
)

REJECT = reject_option('Answer "not sure" when the top probability is below T')


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _is_image_file(arg: str | None) -> bool:
    """An image's name (model files are .safetensors, runs are directories)."""
    return (arg is not None and Path(arg).suffix.lower() in IMAGE_SUFFIXES
            and not Path(arg).is_dir())


def _finite_probabilities(net, x, name: str):
    """net.predict_proba(x), (N, K); a Failure naming `name` when any is not finite."""
    import warnings

    import numpy as np
    with warnings.catch_warnings():     # overflow is checked below (a filter, not errstate:
        warnings.simplefilter("ignore", RuntimeWarning)     # the BLAS row threads see it)
        probs = net.predict_proba(x)
    if not np.isfinite(probs).all():      # finite weights so large that the logits overflow
        raise Failure(f"{name}: the model's outputs are not finite numbers (its weights "
                      f"overflow); the model file is damaged")
    return probs


@click.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@REJECT
@click.option("--data-dir", type=click.Path(file_okay=False), help="MNIST cache directory.")
def evaluate(model, as_json, reject, data_dir):
    """Test accuracy, per-class precision/recall/F1, calibration, the confusion matrix and the
    reject option's trade-off (accuracy on the answered images vs the share answered)."""
    from ..metrics import (
        REJECT_THRESHOLDS,
        classification_report,
        coverage_curve,
        format_report_table,
    )

    net, meta = load_model_arg(model)
    reject = model_reject(reject, meta)
    dataset, x_test, y_test = test_set(meta, data_dir)
    probs = _finite_probabilities(net, x_test, model)
    report = classification_report(y_test, probs)
    if reject is not None:              # its row joins the trade-off table
        report["coverage"] = coverage_curve(y_test, probs, sorted({*REJECT_THRESHOLDS, reject}))
        row = next(r for r in report["coverage"] if r["threshold"] == reject)
        report["reject"] = dict(row)    # its own dict: the extra field stays out of the curve
        if net.input_space is not None:
            report["reject"]["input_space"] = _with_input_space(net, x_test, y_test, probs,
                                                               reject)
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
    console.print(_coverage_table(report["coverage"], reject))
    both = (report.get("reject") or {}).get("input_space")
    if both:
        accuracy = "-" if both["accuracy"] is None else f"{both['accuracy']:.2%}"
        console.print(f"with --reject {reject:g} and the input-space check (not sure when an "
                      f"image looks like no training digit): {both['coverage']:.2%} answered, "
                      f"{accuracy} of them right; the check alone keeps "
                      f"{both['typical']:.2%} of the test images")
    return EXIT_OK


def _with_input_space(net, x_test, y_test, probs, reject: float) -> dict:
    """The reject option's row when images unlike the training digits are "not sure" too."""
    from ..metrics import coverage_curve
    typical = net.input_space.typical(x_test)
    row = coverage_curve(y_test, probs, [reject], typical)[0]
    return {"typical": float(typical.mean()), "coverage": row["coverage"],
            "accuracy": row["accuracy"]}


def _coverage_table(rows: list[dict], reject: float | None):
    """The reject option's trade-off, one row per threshold; the --reject one in bold."""
    from rich.table import Table
    table = Table(title="answer only when the top probability >= t (reject option)")
    for column in ("t", "answered", "accuracy on answered", "not sure"):
        table.add_column(column, justify="right")
    for r in rows:
        accuracy = "-" if r["accuracy"] is None else f"{r['accuracy']:.2%}"
        style = "bold" if reject is not None and r["threshold"] == reject else None
        table.add_row(f"{r['threshold']:g}", f"{r['coverage']:.2%}", accuracy,
                      f"{1 - r['coverage']:.2%}", style=style)
    return table


@click.command()
@click.argument("model", required=False)
@click.argument("images", nargs=-1, type=click.Path())
@click.option("--index", "indices", type=int, multiple=True,
              help="Test-set image index (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@REJECT
@click.option("--data-dir", type=click.Path(file_okay=False), help="MNIST cache directory.")
def predict(model, images, indices, as_json, reject, data_dir):
    """Classify test images by --index, or image files (PNG/JPEG, any size).

    MODEL is a run directory, a model file or a shipped model's name (`barenet models`); left
    out (`barenet predict digit.png`), the default shipped model answers. A file that cannot
    be classified is named on stderr with the reason; the others are still classified, and
    the exit code is 2 when any failed.
    """
    import numpy as np

    if _is_image_file(model):           # `barenet predict a.png b.png`: no MODEL given
        model, images = None, (model, *images)
    if not images and not indices:
        raise Failure("give --index I (test-set image) or one or more image files")
    for i in indices:
        if i < 0:
            raise Failure(f"--index {i} is negative: test images are numbered from 0")
    net, meta = load_model_arg(model)
    reject = model_reject(reject, meta)
    inputs, names, truths = [], [], []
    if indices:
        _add_test_images(inputs, names, truths, indices, meta, data_dir)
    errors = _add_image_files(inputs, names, truths, images) if images else {}
    probs = iter(_finite_probabilities(net, np.stack(inputs), model or "the default model")
                 if inputs else np.zeros((0, 0)))
    # With --reject, an input far from every training digit is "not sure" too (inputspace.py).
    space = net.input_space if reject is not None and inputs else None
    typical = iter(space.typical(np.stack(inputs)) if space is not None else [])
    if as_json:
        rows = []
        for k, name in enumerate(names):
            if k in errors:
                rows.append({"input": name, "error": errors[k]})
                continue
            p = next(probs)
            row = {"input": name, "label": int(p.argmax()),
                   "probabilities": [round(float(v), 6) for v in p]}
            if space is not None:
                row["typical"] = bool(next(typical))
            if reject is not None:      # the answer, or null for "not sure"
                sure = answered(p.max(), reject, row.get("typical"))
                row["answer"] = row["label"] if sure else None
            rows.append(row)
        click.echo(json.dumps(rows, allow_nan=False))
        return EXIT_USAGE if errors else EXIT_OK
    _print_top3(names, truths, errors, probs, reject, typical if space is not None else None)
    return EXIT_USAGE if errors else EXIT_OK


def _add_test_images(inputs: list, names: list, truths: list, indices, meta: dict,
                     data_dir) -> None:
    """Test-set images by index, each (28, 28), named test[i], with its true label."""
    dataset, x_test, y_test = test_set(meta, data_dir)
    for i in indices:
        if i >= len(x_test):
            raise Failure(f"--index {i} is out of range: the {dataset} test set has "
                          f"{len(x_test)} images (0-{len(x_test) - 1})")
        inputs.append(x_test[i])
        names.append(f"test[{i}]")
        truths.append(int(y_test[i]))


def _add_image_files(inputs: list, names: list, truths: list, images) -> dict[int, str]:
    """Image files, each preprocessed to (28, 28); {position in names: why it failed}."""
    from ..data.preprocess import ImageError, load_digit, preprocess_image
    errors = {}
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
    return errors


def _print_top3(names: list, truths: list, errors: dict, probs, reject=None,
                typical=None) -> None:
    """One line per input with its top-3 classes ("not sure" first when the top one is below
    the reject threshold, or when `typical` says the input looks like no training digit); a
    failed one's reason on stderr."""
    from ..metrics import top_k
    for k, (name, truth) in enumerate(zip(names, truths)):
        if k in errors:
            click.echo(f"error: {errors[k]}", err=True)
            continue
        (cls,), (pr,) = top_k(next(probs)[None], 3)
        guesses = "  ".join(f"{c}: {p:6.2%}" for c, p in zip(cls, pr))
        label = f" (true {truth})" if truth is not None else ""
        answer = cls[0] if reject is None or pr[0] >= reject else "not sure"
        if typical is not None and not answered(pr[0], reject, next(typical)):
            answer = "not sure (looks like no training digit)"
        click.echo(f"{name}{label} -> {answer}    top-3  {guesses}")
    if errors and len(names) > 1:
        click.echo(f"error: {len(errors)} of {len(names)} images could not be classified",
                   err=True)
