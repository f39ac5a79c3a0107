"""The page of report.html: its tables, its sections of figures and its style, as one string.

report.py evaluates the model and draws the figures; here they are laid out. No matplotlib.
"""

from __future__ import annotations

import html
import json
import platform
import time
from pathlib import Path

import numpy as np

from .common import dataset_of


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


def best_val(history: list[dict]) -> tuple[float | None, int | None]:
    rows = [r for r in history if r.get("val_accuracy") is not None]
    if not rows:
        return None, None
    best = max(rows, key=lambda r: r["val_accuracy"])
    return best["val_accuracy"], best.get("epoch")


def per_class_section(names) -> str:
    """The heading above the per-class table and plots."""
    return "Per digit" if names is None else "Per class"


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
    n_params = sum(p.data.size for p in run["model"].parameters())
    # An ensemble's directory has no epochs of its own: "—", not 0 epochs in 0.0 s.
    train_seconds = train_metrics.get("train_seconds_total",
                                      sum(r.get("time", 0.0) for r in history) if history
                                      else None)
    dataset = dataset_of(config)
    names = data.class_names(dataset)
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
        "<h2>Results</h2>",
        _table(_results(report, history, train_seconds, n_params), cls="kv"),
        *_figure_sections(figures, names, _class_tables(report, names)),
        "<h2>Network</h2>",
        f"<p>{n_params:,} parameters.</p>",
        _table(_layer_rows(run["model"], run["meta"].get("architecture", [])),
               ["#", "layer", "arguments"], cls="text"),
        "<h2>Configuration</h2>",
        _table(_config_rows(config), ["section", "settings"], cls="text"),
        "<h2>Timing</h2>", _table(_timing_rows(history, train_seconds, timing), cls="kv"),
        "</body></html>"]
    return "\n".join(p for p in parts if p)


def _results(report: dict, history: list[dict], train_seconds, n_params: int) -> list:
    """The Results table: test metrics, best validation accuracy, epochs, time, size."""
    val, val_epoch = best_val(history)
    return [
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


def _class_tables(report: dict, names) -> list[str]:
    """Precision, recall and F1 per class beside the most confused pairs, as HTML parts."""
    def label(k) -> str:
        return str(k) if names is None else html.escape(names[k])

    per_class = [(label(c["class"]), f"{c['precision']:.4f}", f"{c['recall']:.4f}",
                  f"{c['f1']:.4f}", str(c["support"])) for c in report["per_class"]]
    for name, key in (("macro avg", "macro_avg"), ("weighted avg", "weighted_avg")):
        a = report[key]
        per_class.append((f"<b>{name}</b>", f"{a['precision']:.4f}", f"{a['recall']:.4f}",
                          f"{a['f1']:.4f}", str(report["n"])))
    confused = [(f"{label(p['true'])} → {label(p['predicted'])}", str(p["count"]))
                for p in report["most_confused"]]
    return ['<div class="cols">',
            _table(per_class, ["digit" if names is None else "class", "precision",
                               "recall", "F1", "support"]),
            "<div><b>Most confused (true → predicted)</b>",
            _table(confused, ["pair", "images"]) if confused else "<p>none</p>",
            "</div></div>"]


def _figure_sections(figures, names, class_tables: list[str]) -> list[str]:
    """Each figure under its section's heading; the per-class section opens with the tables."""
    parts, section = [], None
    for name, title, text, png in figures:
        if name != section:
            section = name
            parts.append(f"<h2>{html.escape(name)}</h2>")
            if name == per_class_section(names):
                parts += class_tables
        caption = f"<b>{html.escape(title)}.</b> {html.escape(text)}"
        if png is None:
            parts.append(f'<p class="sub">{caption}</p>')
            continue
        parts += [f"<figure><figcaption>{caption}</figcaption>",
                  f'<img src="data:image/png;base64,{png}" alt="{html.escape(title)}">',
                  "</figure>"]
    return parts


def _config_rows(config: dict) -> list[tuple[str, str]]:
    """The Configuration table: one row per section, its settings in a line."""
    sections = {}
    for key, value in flatten(config).items():
        section, _, name = key.rpartition(".")
        sections.setdefault(section or "run", []).append(f"{name} = {json.dumps(value)}")
    return [(html.escape(section), html.escape(" · ".join(items)))
            for section, items in sections.items()]


def _timing_rows(history: list[dict], train_seconds, timing: dict) -> list[tuple[str, str]]:
    epoch_times = [r["time"] for r in history if r.get("time") is not None]
    return [("training, total", _fmt(train_seconds, "s")),
            ("training, mean per epoch", _fmt(float(np.mean(epoch_times)) if epoch_times
                                              else None, "s")),
            ("evaluation of the test set (for this report)", _fmt(timing["evaluate"], "s")),
            ("plots", _fmt(timing["plots"], "s")),
            ("machine", html.escape(f"Python {platform.python_version()}, NumPy "
                                    f"{np.__version__}, {platform.machine()}"))]


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
