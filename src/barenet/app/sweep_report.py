"""`barenet sweep-report DIR`: the study's trials table, Optuna's plots, best.toml, report.html.

Selection is on validation accuracy only; the test accuracy shown is the best trial's, read
from its run directory for the table, never used to choose.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import click

from .common import Failure

REPORT_FILE = "sweep-report.html"
BEST_FILE = "best.toml"
PLOTS = ("history", "importances", "parallel", "comparison")
TARGET = "validation accuracy"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _shown(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _val(trial) -> float | None:
    """The trial's validation accuracy: its value, or the last one it reported (pruned)."""
    if trial.value is not None and not math.isnan(trial.value):
        return trial.value
    if trial.intermediate_values:
        return trial.intermediate_values[max(trial.intermediate_values)]
    return None


def best_trial(study):
    from optuna.trial import TrialState
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def trial_rows(study, out: Path) -> list[dict]:
    best = best_trial(study)
    rows = []
    for t in study.get_trials(deepcopy=False):
        note = t.user_attrs.get("fail_reason", "")
        if t.user_attrs.get("surplus"):
            note = "surplus (the study was already full)"
        elif t.state.name == "PRUNED" and t.intermediate_values:
            note = f"pruned at epoch {max(t.intermediate_values)}"
        elif "retry_history" in t.system_attrs:
            note = f"retry of trial {t.system_attrs['retry_history'][-1]}"
        elif t.state.name == "FAIL" and not note:
            note = "worker stopped (heartbeat); retried"
        test = None
        if best is not None and t.number == best.number:
            test = _read_json(out / t.user_attrs.get("run", "") / "metrics.json").get(
                "test_accuracy")
            if test is None:
                note = f"test accuracy: see {t.user_attrs.get('run')} on {t.user_attrs.get('host')}"
        rows.append({"number": t.number, "state": t.state.name.lower(),
                     "params": dict(t.params), "val_accuracy": _val(t), "test_accuracy": test,
                     "seconds": t.user_attrs.get("train_seconds"),
                     "run": t.user_attrs.get("run", ""), "note": note,
                     "best": best is not None and t.number == best.number})
    return rows


def print_summary(study, out: Path) -> None:
    """The trials table on the terminal, best first."""
    from rich.console import Console
    from rich.table import Table

    rows = trial_rows(study, out)
    names = list(dict.fromkeys(k for r in rows for k in r["params"]))
    table = Table(title=f"study {study.study_name}: {len(rows)} trials")
    for col in ("trial", "state", *names, "val acc", "test acc", "time s", "note"):
        table.add_column(col, overflow="fold")
    key = lambda r: -(r["val_accuracy"] if r["val_accuracy"] is not None else -1)  # noqa: E731
    for r in sorted(rows, key=key):
        table.add_row(f"{r['number']}{' *' if r['best'] else ''}", r["state"],
                      *[_shown(r["params"].get(n, "")) for n in names],
                      f"{r['val_accuracy']:.4f}" if r["val_accuracy"] is not None else "",
                      f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "",
                      f"{r['seconds']:.0f}" if r["seconds"] is not None else "", r["note"])
    Console(stderr=False, width=160).print(table)
    best = best_trial(study)
    if best is not None:
        click.echo(f"best: trial {best.number}, val accuracy {best.value:.4f}; "
                   f"train it again: barenet train --config {out / BEST_FILE} --seeds 3")


def _save(ax_or_fig, path: Path, size=(9, 5.5)) -> Path:
    fig = getattr(ax_or_fig, "figure", ax_or_fig)
    if hasattr(ax_or_fig, "__len__") and not hasattr(ax_or_fig, "figure"):
        fig = ax_or_fig.flat[0].figure
    if size is not None:
        fig.set_size_inches(*size)
        fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path


def comparison_figure(study, title: str):
    """Grid sweeps: mean validation accuracy per value of each parameter, in the spec's order."""
    from matplotlib.figure import Figure
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    names = list(dict.fromkeys(k for t in trials for k in t.params))
    fig = Figure(figsize=(9, 1.2 + 0.5 * sum(1 for _ in names) + 0.45 * sum(
        len(getattr(trials[0].distributions.get(n), "choices", ())) for n in names)))
    axes = fig.subplots(len(names), 1, squeeze=False)[:, 0]
    for ax, name in zip(axes, names):
        choices = list(trials[0].distributions[name].choices)
        means, labels = [], []
        for c in choices:
            vals = [t.value for t in trials if t.params.get(name) == c]
            if vals:
                means.append(100 * sum(vals) / len(vals))
                labels.append(str(c))
        y = list(range(len(means)))[::-1]
        ax.hlines(y, min(means) - 1, means, color="#cbd5e1", linewidth=2)
        ax.plot(means, y, "o", color="#2563eb", markersize=8)
        for xi, yi in zip(means, y):
            ax.annotate(f"{xi:.2f} %", (xi, yi), xytext=(8, 0), textcoords="offset points",
                        va="center")
        ax.set_yticks(y, labels)
        span = max(max(means) - min(means), 0.2)
        ax.set_xlim(min(means) - 0.15 * span - 0.05,
                    min(max(means) + 0.35 * span + 0.05, 100.5))
        ax.set_xlabel("validation accuracy (%)" + (" (mean over the other parameters)"
                                                    if len(names) > 1 else ""))
        ax.set_ylabel(name)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def write_plots(study, out: Path, grid: bool) -> dict[str, str]:
    """sweep-<name>.png for each plot that the study's trials allow; name -> file or reason."""
    import matplotlib
    matplotlib.use("Agg")
    import optuna
    from optuna.visualization import matplotlib as ovm

    from .sweep_study import quiet_optuna
    quiet_optuna()
    complete = [t for t in study.get_trials(deepcopy=False)
                if t.state == optuna.trial.TrialState.COMPLETE]
    results: dict[str, str] = {}

    def importance():
        try:
            import sklearn  # noqa: F401
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        except ImportError:
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        return ovm.plot_param_importances(study, evaluator=evaluator, target_name=TARGET)

    makers = {"history": lambda: ovm.plot_optimization_history(study, target_name=TARGET),
              "importances": importance,
              "parallel": lambda: ovm.plot_parallel_coordinate(study, target_name=TARGET)}
    sizes = {"parallel": (4 + 1.4 * len(complete[0].params) if complete else 9, 6),
             "comparison": None}
    if grid:
        def comparison():
            import matplotlib.style
            with matplotlib.style.context("default"):   # Optuna's plots switch to ggplot
                names = list(complete[0].params)
                by = names[0] if len(names) == 1 else "parameter"
                return comparison_figure(
                    study, f"{study.study_name}: validation accuracy by {by}")
        makers["comparison"] = comparison
    for name, make in makers.items():
        if len(complete) < 2:
            results[name] = "needs at least two complete trials"
            continue
        try:
            results[name] = _save(make(), out / f"sweep-{name}.png",
                                  sizes.get(name, (9, 5.5))).name
        except Exception as exc:              # a plot Optuna cannot draw for this study
            results[name] = f"not drawn: {' '.join(str(exc).split())[:200]}"
    return results


def write_best(study, out: Path) -> Path | None:
    """best.toml: the best trial's exact run config, ready for `barenet train --config`."""
    from .sweep_spec import config_toml
    best = best_trial(study)
    if best is None:
        return None
    config = dict(best.user_attrs.get("config") or {})
    if not config:           # the trial's run directory, when it is on this machine
        config = _read_json(out / best.user_attrs.get("run", "") / "config.json")
        config.pop("barenet_version", None)
    if not config:
        return None
    shown = ", ".join(f"{k}={_shown(v)}" for k, v in best.params.items())
    config["description"] = (f"best of sweep {study.study_name}: trial {best.number}, "
                             f"val accuracy {best.value:.4f} ({shown})")
    header = (f"Written by barenet sweep-report from study {study.study_name!r}, trial "
              f"{best.number} (chosen on validation accuracy).\n"
              f"Train it: barenet train --config {out / BEST_FILE} --seeds 3")
    path = out / BEST_FILE
    from ..serialize import atomic_write_bytes
    atomic_write_bytes(path, config_toml(config, header).encode())
    return path


def write_sweep_report(study, out: Path, spec=None) -> Path:
    """sweep-report.html, the PNGs beside it and best.toml, in the sweep directory."""
    out = Path(out)
    grid = (spec.grid if spec is not None
            else any("grid_id" in t.system_attrs for t in study.get_trials(deepcopy=False)))
    try:
        plots = write_plots(study, out, grid)
    except ImportError:
        plots = {name: "matplotlib is not installed (pip install 'barenet[plots]')"
                 for name in PLOTS}
    best_path = write_best(study, out)
    rows = trial_rows(study, out)
    names = list(dict.fromkeys(k for r in rows for k in r["params"]))
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in ("trial", "state", *names, "val acc",
                                                    "test acc", "time s", "run", "note"))
    body = []
    for r in rows:
        cells = [str(r["number"]) + (" ★" if r["best"] else ""), r["state"],
                 *[_shown(r["params"].get(n, "")) for n in names],
                 f"{r['val_accuracy']:.4f}" if r["val_accuracy"] is not None else "",
                 f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "",
                 f"{r['seconds']:.0f}" if r["seconds"] is not None else "", r["run"], r["note"]]
        style = ' style="font-weight:bold"' if r["best"] else ""
        body.append(f"<tr{style}>" + "".join(f"<td>{esc(str(c))}</td>" for c in cells) + "</tr>")
    figures = []
    for name, result in plots.items():
        if result.endswith(".png"):
            figures.append(f'<h2>{esc(name)}</h2><img src="{esc(result)}" alt="{esc(name)}">')
        else:
            figures.append(f"<h2>{esc(name)}</h2><p>{esc(result)}</p>")
    best = best_trial(study)
    best_line = (f"<p>Best: trial {best.number}, validation accuracy {best.value:.4f}. "
                 f"<code>barenet train --config {esc(str(best_path))} --seeds 3</code></p>"
                 if best is not None and best_path else "<p>No trial completed yet.</p>")
    description = study.user_attrs.get("description", "")
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>sweep {esc(study.study_name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse;font-size:14px}}td,th{{border:1px solid #ccc;padding:3px 8px}}
img{{max-width:100%}}</style></head><body>
<h1>Sweep {esc(study.study_name)}</h1><p>{esc(description)}</p>{best_line}
<p>Trials are chosen on validation accuracy; the test accuracy is shown for the best only.</p>
<table><tr>{head}</tr>{''.join(body)}</table>{''.join(figures)}</body></html>
"""
    path = out / REPORT_FILE
    from ..serialize import atomic_write_bytes
    atomic_write_bytes(path, page.encode())
    click.echo(f"report: {path}" + (f"; best config: {best_path}" if best_path else ""),
               err=True)
    return path


@click.command()
@click.argument("sweep_dir", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--storage", help="Optuna storage URL (default: the one in DIR/sweep.json).")
@click.option("--study", "study_name", help="Study name (default: the one in DIR/sweep.json).")
def command(sweep_dir, storage, study_name):
    """Write DIR/sweep-report.html, the plots and DIR/best.toml for a sweep."""
    import optuna

    from .sweep_study import SWEEP_FILE, make_storage, quiet_optuna

    out = Path(sweep_dir)
    info = _read_json(out / SWEEP_FILE)
    if not info and not (storage and study_name):
        raise Failure(f"{out}: no {SWEEP_FILE}; is this a sweep directory? "
                      f"(or give --storage and --study)")
    url = storage or info.get("storage")
    if "***" in url:
        raise Failure(f"{out}/{SWEEP_FILE} has no password for {url}; give --storage URL")
    quiet_optuna()
    try:
        study = optuna.load_study(storage=make_storage(url, 60),
                                  study_name=study_name or info["study"])
    except KeyError as exc:
        raise Failure(f"no study {study_name or info['study']!r} in {url} ({exc})") from None
    print_summary(study, out)
    write_sweep_report(study, out)
    return 0
