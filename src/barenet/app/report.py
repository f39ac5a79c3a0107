"""report.html for a run directory: results, per-class table, every plot, config and timing.

One self-contained file (PNG plots embedded as base64 data URIs), written at the end of
`barenet train` and by `barenet report RUN`. Evaluates the model on its dataset's test set.
"""

from __future__ import annotations

import base64
import html
import json
import platform
import sys
import time
from pathlib import Path

import click
import numpy as np

REPORT_FILE = "report.html"
PLOT_NAMES = ("curves", "confusion", "per-digit", "misclassified", "predictions", "confidence",
              "reliability", "weights", "saliency")
INSTALL_HINT = "pip install 'barenet[plots]'"


class _Missing(Exception):
    """matplotlib is not installed."""


def _read_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """{"optimizer": {"lr": 0.1}} -> {"optimizer.lr": 0.1}; lists of dicts stay values."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def load_run(run_dir: Path) -> dict:
    """config, history and training metrics of a run directory (files, else the model's meta)."""
    from ..serialize import load_model
    from .runs import resolve_model_path

    model, meta = load_model(resolve_model_path(run_dir))
    config = _read_json(run_dir / "config.json", None) or meta.get("config") or {}
    history = _read_json(run_dir / "history.json", None) or meta.get("history") or []
    return {"model": model, "meta": meta, "config": config, "history": history,
            "metrics": _read_json(run_dir / "metrics.json", {})}


def best_val(history: list[dict]) -> tuple[float | None, int | None]:
    rows = [r for r in history if r.get("val_accuracy") is not None]
    if not rows:
        return None, None
    best = max(rows, key=lambda r: r["val_accuracy"])
    return best["val_accuracy"], best.get("epoch")


def _evaluate(model, dataset: str, data_dir) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from .. import data

    _, (x_test, y_test) = data.load_dataset(dataset, data_dir)
    return x_test, np.asarray(y_test, np.int64), model.predict_proba(x_test)


def _dataset(config: dict) -> str:
    return config.get("data", {}).get("dataset", "mnist")


def _per_class_section(names) -> str:
    """The heading above the per-class table and plots."""
    return "Per digit" if names is None else "Per class"


def _figures(run: dict, x, y, probs, report: dict,
             names=None) -> list[tuple[str, str, str, str, object]]:
    """(section, file name, title, explanation, thunk returning a Figure or None), in order.

    names: the data set's class names, None when the labels are digits (barenet.data).
    """
    from .. import saliency
    from . import plots

    model = run["model"]
    # An ensemble has no layers of its own: its pictures of the inside show its first member.
    inner, of_whom = model, ""
    if not hasattr(model, "layers"):
        inner, of_whom = model.members[0], f" Of the ensemble's first member (of {len(model)})."
    cm = np.array(report["confusion_matrix"])
    firsts = np.array([np.flatnonzero(y == k)[0] for k in range(probs.shape[1])
                       if (y == k).any()])

    def saliency_plot():
        gradients, targets = saliency.input_gradient(inner, x[firsts])
        own = probs[firsts] if inner is model else inner.predict_proba(x[firsts])
        return plots.saliency_figure(x[firsts], y[firsts], own, gradients, targets,
                                     names=names)

    noun = "digit" if names is None else "class"
    nouns = "digits" if names is None else "classes"
    training, per_class, mistakes = "Training", _per_class_section(names), "Mistakes"
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
        (inside, "weights", "First-layer weights",
         "What the first layer responds to." + of_whom,
         lambda: plots.first_layer_weights(inner)),
        (inside, "saliency", "Saliency", f"The first test image of each {noun} and the "
         f"gradient of the predicted {noun}'s score (logit) with respect to each pixel, "
         "from the network's own backward pass." + of_whom, saliency_plot),
    ]


def _fmt(v, kind: str = "") -> str:
    if v is None:
        return "—"
    if kind == "%":
        return f"{v:.2%}"
    if kind == "s":
        return f"{v:.1f} s"
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape(str(v))


def _table(rows, head=None, cls: str = "") -> str:
    out = [f'<table class="{cls}">' if cls else "<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return "\n".join(out + ["</table>"])


STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328;
       max-width: 1120px; margin: 2em auto; padding: 0 1.2em; }
h1 { font-size: 1.7em; margin-bottom: 0.1em; } h2 { margin-top: 2em; border-bottom: 1px solid
#d0d7de; padding-bottom: 0.2em; } .sub { color: #57606a; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8em 0; font-variant-numeric: tabular-nums; }
td, th { border: 1px solid #d0d7de; padding: 0.25em 0.7em; text-align: right; }
th { background: #f6f8fa; } td:first-child, th:first-child { text-align: left; }
table.text td, table.text th { text-align: left; vertical-align: top; }
table.kv td:first-child { white-space: nowrap; }
code, table.text td:first-child { font-family: ui-monospace, monospace; }
figure { margin: 1.2em 0 2em; } figure img { max-width: 100%; height: auto;
border: 1px solid #eaeef2; } figcaption { color: #57606a; margin-bottom: 0.4em; }
.cols { display: flex; gap: 2.5em; flex-wrap: wrap; align-items: flex-start; }
"""


def render_html(run_dir: Path, run: dict, report: dict, figures: list[tuple[str, str, str]],
                timing: dict) -> str:
    """The page; `figures` holds (section, title, explanation, base64 PNG or None)."""
    from .. import data

    config, history, train_metrics = run["config"], run["history"], run["metrics"]
    val, val_epoch = best_val(history)
    n_params = sum(p.data.size for p in run["model"].parameters())
    # An ensemble's directory has no epochs of its own: "—", not 0 epochs in 0.0 s.
    train_seconds = train_metrics.get("train_seconds_total",
                                      sum(r.get("time", 0.0) for r in history) if history
                                      else None)
    dataset = _dataset(config)
    names = data.class_names(dataset)

    def label(k) -> str:
        return str(k) if names is None else html.escape(names[k])

    results = [
        ("test accuracy", _fmt(report["accuracy"], "%")),
        ("test loss (cross-entropy)", _fmt(report["log_loss"])),
        (f"top-{report['top_k_accuracy']['k']} accuracy",
         _fmt(report["top_k_accuracy"]["accuracy"], "%")),
        ("best validation accuracy", _fmt(val, "%") + (f" (epoch {val_epoch})"
                                                       if val_epoch else "")),
        ("macro F1", _fmt(report["macro_avg"]["f1"])),
        ("expected calibration error", _fmt(report["ece"], "%")),
        ("epochs", _fmt(len(history) if history else None)),
        ("training time", _fmt(train_seconds, "s")),
        ("parameters", f"{n_params:,}"),
    ]
    per_class = [(label(c["class"]), f"{c['precision']:.4f}", f"{c['recall']:.4f}",
                  f"{c['f1']:.4f}", str(c["support"])) for c in report["per_class"]]
    for name, key in (("macro avg", "macro_avg"), ("weighted avg", "weighted_avg")):
        a = report[key]
        per_class.append((f"<b>{name}</b>", f"{a['precision']:.4f}", f"{a['recall']:.4f}",
                          f"{a['f1']:.4f}", str(report["n"])))
    confused = [(f"{label(p['true'])} → {label(p['predicted'])}", str(p["count"]))
                for p in report["most_confused"]]
    layers = _layer_rows(run["model"], run["meta"].get("architecture", []))
    epoch_times = [r["time"] for r in history if r.get("time") is not None]
    times = [("training, total", _fmt(train_seconds, "s")),
             ("training, mean per epoch", _fmt(float(np.mean(epoch_times)) if epoch_times
                                               else None, "s")),
             ("evaluation of the test set (for this report)", _fmt(timing["evaluate"], "s")),
             ("plots", _fmt(timing["plots"], "s")),
             ("machine", html.escape(f"Python {platform.python_version()}, NumPy "
                                     f"{np.__version__}, {platform.machine()}"))]
    description = config.get("description") or ""
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>barenet report: {html.escape(run_dir.name)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>barenet run <code>{html.escape(run_dir.name)}</code></h1>",
        f'<p class="sub">{html.escape(dataset)} test set, {report["n"]:,} images'
        + (f" · {html.escape(description)}" if description else "")
        + f" · report written {time.strftime('%Y-%m-%d %H:%M')}</p>",
        "<h2>Results</h2>", _table(results, cls="kv"),
    ]
    class_table = ['<div class="cols">',
                   _table(per_class, ["digit" if names is None else "class", "precision",
                                      "recall", "F1", "support"]),
                   "<div><b>Most confused (true → predicted)</b>",
                   _table(confused, ["pair", "images"]) if confused else "<p>none</p>",
                   "</div></div>"]
    section = None
    for name, title, text, png in figures:
        if name != section:
            section = name
            parts.append(f"<h2>{html.escape(name)}</h2>")
            if name == _per_class_section(names):
                parts += class_table
        caption = f"<b>{html.escape(title)}.</b> {html.escape(text)}"
        if png is None:
            parts.append(f'<p class="sub">{caption}</p>')
            continue
        parts += [f"<figure><figcaption>{caption}</figcaption>",
                  f'<img src="data:image/png;base64,{png}" alt="{html.escape(title)}">',
                  "</figure>"]
    sections = {}
    for key, value in flatten(config).items():
        section, _, name = key.rpartition(".")
        sections.setdefault(section or "run", []).append(f"{name} = {json.dumps(value)}")
    parts += ["<h2>Network</h2>",
              f"<p>{n_params:,} parameters.</p>",
              _table(layers, ["#", "layer", "arguments"], cls="text"),
              "<h2>Configuration</h2>",
              _table([(html.escape(section), html.escape(" · ".join(items)))
                      for section, items in sections.items()], ["section", "settings"],
                     cls="text"),
              "<h2>Timing</h2>", _table(times, cls="kv"), "</body></html>"]
    return "\n".join(p for p in parts if p)


def _layer_rows(model, architecture) -> list[tuple[str, str, str]]:
    """The Network table: one row per layer (from the file's architecture), or for an
    ensemble one per member (its layers in a line, its weight), then the test-time views."""
    if hasattr(model, "layers"):
        return [(str(i), f'<code>{html.escape(layer.get("type", "?"))}</code>',
                 html.escape(", ".join(f"{k}={v}" for k, v in layer.items() if k != "type")))
                for i, layer in enumerate(architecture)]
    rows = [(str(i), f"<code>member</code> (weight {w:.3f})",
             html.escape(" - ".join(type(layer).__name__ for layer in member.layers)))
            for i, (member, w) in enumerate(zip(model.members, model.weights))]
    rows.append(("", "<code>views</code>", html.escape(", ".join(model.views))))
    return rows


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
        from .cli import EXIT_FAIL, Failure
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
    dataset = _dataset(run["config"])
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
    from .cli import Failure
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
