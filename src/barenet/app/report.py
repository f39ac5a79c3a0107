"""report.html for a run directory: results, per-class table, every plot, config and timing.

One self-contained file (PNG plots embedded as base64 data URIs), written at the end of
`barenet train` and by `barenet report RUN`. Evaluates the model on its dataset's test set.
Here: the run, its figures and the command; the page itself is laid out in report_html.py.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import click
import numpy as np

from .common import EXIT_FAIL, Failure, dataset_of, resolve_model_path
from .report_html import per_class_section, render_html

REPORT_FILE = "report.html"
PLOT_NAMES = ("curves", "confusion", "per-digit", "misclassified", "predictions", "confidence",
              "reliability", "coverage", "weights", "saliency", "embedding", "robustness")
EMBED_IMAGES = 2000            # test images in the report's map of the last hidden layer
ROBUSTNESS_IMAGES = 1000        # test images per corruption level when the run has no
                                # robustness.json of its own (`barenet robustness RUN`)
INSTALL_HINT = "pip install 'barenet[plots]'"


class _Missing(Exception):
    """matplotlib is not installed."""


def _read_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def load_run(run_dir: Path) -> dict:
    """config, history and training metrics of a run directory (files, else the model's meta)."""
    from ..serialize import load_model

    model, meta = load_model(resolve_model_path(run_dir))
    config = _read_json(run_dir / "config.json", None) or meta.get("config") or {}
    history = _read_json(run_dir / "history.json", None) or meta.get("history") or []
    return {"model": model, "meta": meta, "config": config, "history": history,
            "metrics": _read_json(run_dir / "metrics.json", {}),
            "robustness": _read_json(run_dir / "robustness.json", None)}


def _evaluate(model, dataset: str, data_dir) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from .. import data

    _, (x_test, y_test) = data.load_dataset(dataset, data_dir)
    return x_test, np.asarray(y_test, np.int64), model.predict_proba(x_test)


def _figures(run: dict, x, y, probs, report: dict,
             names=None) -> list[tuple[str, str, str, str, object]]:
    """(section, file name, title, explanation, thunk returning a Figure or None), in order.

    names: the data set's class names, None when the labels are digits (barenet.data).
    """
    from . import plots

    model = run["model"]
    # An ensemble has no layers of its own: its pictures of the inside show its first member.
    inner, of_whom = model, ""
    if not hasattr(model, "layers"):
        inner, of_whom = model.members[0], f" Of the ensemble's first member (of {len(model)})."
    cm = np.array(report["confusion_matrix"])
    noun = "digit" if names is None else "class"
    nouns = "digits" if names is None else "classes"
    training, per_class, mistakes = "Training", per_class_section(names), "Mistakes"
    confidence, inside = "Confidence and calibration", "Inside the network"
    return [
        (training, "curves", "Training curves", "Loss and accuracy per epoch on the "
         "training and validation sets, and the learning rate.",
         lambda: plots.training_curves(run["history"])),
        (per_class, "confusion", "Confusion matrix", f"Rows are true {nouns}, columns "
         "predicted ones; colour on a log scale, so single mistakes stand out.",
         lambda: plots.confusion_heatmap(cm, names=names)),
        (per_class, "per-digit", f"Accuracy per {noun}", f"The share of each {noun}'s test "
         "images classified right (recall).",
         lambda: plots.per_class_accuracy_bars(report["per_class"], report["accuracy"],
                                               names=names)),
        (mistakes, "misclassified", "Misclassified", "Misclassified test images, the most "
         "confident first.", lambda: plots.misclassified_grid(x, y, probs, names=names)),
        (mistakes, "predictions", "Sample predictions", "The first test images, the least "
         "confident right answers and mistakes of every confidence, with all ten "
         "probabilities.", lambda: plots.prediction_grid(x, y, probs, names=names)),
        (confidence, "confidence", "Confidence", f"The probability of the predicted {noun}, "
         "for right and for wrong answers.",
         lambda: plots.confidence_histogram(y, probs, names=names)),
        (confidence, "reliability", "Reliability", "Test images grouped by confidence: a "
         "calibrated network is right 80 % of the time when it says 80 %. The expected "
         "calibration error (ECE) is the gap weighted by the share of images in each bin.",
         lambda: plots.reliability_diagram(report["reliability"], report["ece"],
                                           names=names)),
        *_failure_figures(run, x, y, report, confidence),
        (inside, "weights", "First-layer weights",
         "What the first layer responds to." + of_whom,
         lambda: plots.first_layer_weights(inner)),
        (inside, "saliency", "Saliency", f"The first test image of each {noun} and the "
         f"gradient of the predicted {noun}'s score (logit) with respect to each pixel, "
         "from the network's own backward pass." + of_whom,
         lambda: _saliency(inner, x, y, probs if inner is model else None, names)),
        (inside, "embedding", "Last hidden layer", f"{EMBED_IMAGES:,} test images as the "
         f"last hidden layer sees them, projected by PCA, coloured by true {noun}; "
         "misclassified images circled (`barenet embed RUN --method tsne` for t-SNE)."
         + of_whom, lambda: _embedding(inner, x, y, names)),
    ]


def _saliency(model, x, y, probs, names):
    """Saliency maps of the first test image of each class (probs: the model's own, or None
    to compute them)."""
    from .. import saliency
    from . import plots
    firsts = np.array([np.flatnonzero(y == k)[0] for k in range(10) if (y == k).any()])
    gradients, targets = saliency.input_gradient(model, x[firsts])
    own = model.predict_proba(x[firsts]) if probs is None else probs[firsts]
    return plots.saliency_figure(x[firsts], y[firsts], own, gradients, targets, names=names)


def _embedding(model, x, y, names):
    """PCA map of the last hidden layer's activations for a seeded sample of test images."""
    from . import embed, robustness
    images, labels = robustness.sample(x, y, EMBED_IMAGES, 0)
    values, where = embed.activations(model, images, None)
    coords, share = embed.pca(values)
    return embed.figure(coords, labels, model.predict(images), where,
                        f"PCA: {share[0]:.0%} + {share[1]:.0%} of the variance", names)


def _failure_figures(run: dict, x, y, report: dict, section: str) -> list[tuple]:
    """The reject option's trade-off, and accuracy as the test images get worse (the run's
    robustness.json when `barenet robustness RUN` wrote one, else measured here on a
    sample)."""
    from ..data.corrupt import CORRUPTIONS
    from . import plots, robustness

    def robustness_plot():
        result = run["robustness"]
        if not isinstance(result, dict) or not result.get("models"):
            images, labels = robustness.sample(x, y, ROBUSTNESS_IMAGES, 0)
            result = robustness.measure([("this model", "", run["model"])], images, labels,
                                        dataset_of(run["config"]), list(CORRUPTIONS))
        return robustness.figure(result)

    return [
        (section, "coverage", "Reject option", "Answering only when the top probability "
         "reaches a threshold t trades answers for accuracy: each point is one t, the share "
         "of test images answered and the accuracy on those (`barenet evaluate --reject T`, "
         "`barenet predict --reject T`).", lambda: plots.coverage_curve(report["coverage"])),
        ("How the network fails", "robustness", "Robustness", "Test accuracy as the images "
         "get noisier, rotated, shifted, thinner or thicker, blurred, occluded, faded or "
         "inverted, and under an FGSM attack of growing ε (`barenet robustness RUN` compares "
         "several models).", robustness_plot),
    ]


def write_report(run_dir: str | Path, *, data_dir=None, strict: bool = False,
                 png_dir: str | Path | None = None, only=None) -> Path | None:
    """Write run_dir/report.html and return its path; with png_dir, also each plot as
    png_dir/<name>.png (names in PLOT_NAMES; `only` limits which).

    Called at the end of every training run, where a report problem must not fail the run:
    unless `strict`, a missing matplotlib or any error prints one line to stderr and returns
    None. `barenet report` passes strict=True.
    """
    run_dir = Path(run_dir)
    try:
        return _write(run_dir, data_dir, png_dir, only)
    except _Missing:
        message = f"report.html not written: matplotlib is not installed ({INSTALL_HINT})"
    except Exception as exc:
        if strict:
            raise
        message = f"report.html not written: {type(exc).__name__}: {exc}"
    if strict:
        raise Failure(message, EXIT_FAIL)
    print(message, file=sys.stderr)
    return None


def _write(run_dir: Path, data_dir, png_dir, only) -> Path:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise _Missing() from None
    from .. import data
    from ..metrics import classification_report
    from ..serialize import atomic_write_bytes
    from . import plots

    run = load_run(run_dir)
    dataset = dataset_of(run["config"])
    start = time.perf_counter()
    x, y, probs = _evaluate(run["model"], dataset, data_dir)
    report = classification_report(y, probs)
    evaluate_seconds = time.perf_counter() - start
    start = time.perf_counter()
    figures = []
    for section, name, title, text, make in _figures(run, x, y, probs, report,
                                                     data.class_names(dataset)):
        fig = make()
        if fig is None:                     # no mistakes, or a first layer with no picture
            figures.append((section, title, "Nothing to show for this run.", None))
            continue
        png = plots.png_bytes(fig)
        figures.append((section, title, text, base64.b64encode(png).decode()))
        if png_dir is not None and (not only or name in only):
            Path(png_dir).mkdir(parents=True, exist_ok=True)
            (Path(png_dir) / f"{name}.png").write_bytes(png)
    timing = {"evaluate": evaluate_seconds, "plots": time.perf_counter() - start}
    path = run_dir / REPORT_FILE
    atomic_write_bytes(path, render_html(run_dir, run, report, figures, timing).encode())
    return path


@click.command("report")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--open", "open_browser", is_flag=True, help="Open the report in a web browser.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="MNIST cache directory.")
@click.option("--png-dir", type=click.Path(file_okay=False),
              help="Also save the plots as PNG files in this directory.")
@click.option("--only", metavar="NAMES", help="With --png-dir: comma-separated plots to save, "
              f"of {','.join(PLOT_NAMES)}.")
def command(run, open_browser, data_dir, png_dir, only):
    """Write RUN/report.html: results, per-class table, plots, configuration and timing."""
    from .extras import require

    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    unknown = sorted(set(names or ()) - set(PLOT_NAMES))
    if unknown:
        raise Failure(f"--only: unknown plot {', '.join(unknown)}; choose from "
                      f"{', '.join(PLOT_NAMES)}")
    if only is not None and png_dir is None:      # report.html always holds every plot
        raise Failure("--only chooses which plots --png-dir saves as PNG files; "
                      "give --png-dir DIR too (report.html always has them all)")
    require("plots", "report")
    start = time.perf_counter()
    from contextlib import nullcontext

    from .rundir import MODEL_FILE, claim
    # A finished run is locked while its report is written (not beside a training); anything
    # else gets write_report's own message.
    finished = (Path(run) / MODEL_FILE).is_file()
    with claim(Path(run), resume=True) if finished else nullcontext():
        path = write_report(run, data_dir=data_dir, strict=True, png_dir=png_dir, only=names)
    click.echo(f"wrote {path} ({time.perf_counter() - start:.1f} s)")
    if open_browser:
        import webbrowser
        webbrowser.open(path.resolve().as_uri())
    return 0
