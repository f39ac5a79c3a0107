"""`barenet compare RUN RUN ...`: a table of what differs between runs and how they did,
and their training curves overlaid in one PNG. Reads only the runs' JSON files."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .report import best_val, flatten


def _load(run: Path) -> dict:
    from .runs import RunError

    def read(name: str, required: bool = True):
        path = run / name
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            if required:
                raise RunError(f"{run}: no {name}; is this a finished run directory?") from None
            return {}
        except (OSError, ValueError) as exc:
            raise RunError(f"{path}: unreadable ({exc})") from None

    return {"config": read("config.json"), "history": read("history.json"),
            "metrics": read("metrics.json", required=False)}


def _labels(paths: list[Path]) -> list[str]:
    """Directory names; where two runs share a name, as many parent directories as it takes."""
    parts = [p.resolve().parts for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]                  # the same directory twice


def config_differences(configs: list[dict]) -> dict[str, list]:
    """key -> values (one per run, None where absent) for every key that is not the same."""
    flat = [flatten(c) for c in configs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    return {k: [f.get(k) for f in flat] for k in keys
            if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1}


def comparison_rows(runs: list[dict]) -> list[dict]:
    """Per run: epochs, best validation accuracy, test accuracy, training seconds."""
    rows = []
    for run in runs:
        history, metrics = run["history"], run["metrics"]
        val, epoch = best_val(history)
        rows.append({"epochs": len(history), "best_val_accuracy": val, "best_epoch": epoch,
                     "test_accuracy": metrics.get("test_accuracy"),
                     "seconds": metrics.get("train_seconds_total",
                                            sum(r.get("time") or 0.0 for r in history))})
    return rows


def _pct(v) -> str:
    return "—" if v is None else f"{v:.2%}"


@click.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default="compare.png",
              show_default=True, help="Where to write the overlaid training curves (PNG).")
def command(runs, out):
    """Compare run directories: config differences, best validation and test accuracy, time."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from .extras import install_hint

    paths = [Path(r) for r in runs]
    loaded = [_load(p) for p in paths]
    labels = _labels(paths)
    diffs = config_differences([run["config"] for run in loaded])
    rows = comparison_rows(loaded)
    tests = [r["test_accuracy"] for r in rows if r["test_accuracy"] is not None]
    best_test = max(tests) if tests else None

    # One column per run: a handful of runs fits a terminal, a handful of settings may not.
    table = Table(title="runs compared" + ("" if diffs else " (identical configurations)"))
    table.add_column("")
    for label in labels:
        table.add_column(escape(label), justify="right", overflow="fold")
    for key, values in diffs.items():                  # names and values are text, not markup
        table.add_row(escape(key), *(escape(json.dumps(v)) if v is not None else "—"
                                     for v in values))
    table.add_section()
    val = [_pct(r["best_val_accuracy"]) + (f" (ep {r['best_epoch']})" if r["best_epoch"] else "")
           for r in rows]
    test = [f"[bold]{_pct(r['test_accuracy'])}[/]" if len(rows) > 1 and best_test is not None
            and r["test_accuracy"] == best_test else _pct(r["test_accuracy"]) for r in rows]
    table.add_row("epochs run", *(str(r["epochs"]) for r in rows))
    table.add_row("best val accuracy", *val)
    table.add_row("test accuracy", *test)
    table.add_row("training time", *(f"{r['seconds']:.1f} s" for r in rows))
    console = Console()
    console.print(table)

    try:
        from . import plots
        fig = plots.compare_curves({label: run["history"] for label, run in zip(labels, loaded)})
    except ImportError:
        console.print(f"curves not drawn: matplotlib is not installed ({install_hint('plots')})",
                      style="yellow", markup=False)
        return 0
    plots.save_png(fig, out)
    console.print(f"wrote {out}", markup=False)
    return 0
