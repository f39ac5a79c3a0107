"""`barenet compare RUN RUN ...`: a table of what differs between runs and how they did,
and their training curves overlaid in one PNG. Reads only the runs' JSON files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from ..sizing import cut, short
from .report_html import best_val, flatten

JSON_LIMIT = 16 << 20     # bytes; a history of thousands of epochs is a few hundred kB


def _read_json(run: Path, name: str, required: bool = True):
    from .runs import RunError

    path = run / name
    try:
        with open(path, "rb") as f:
            data = f.read(JSON_LIMIT + 1)
    except FileNotFoundError:
        if required:
            raise RunError(f"{run}: no {name}; is this a finished run directory?") from None
        return None
    except OSError as exc:
        raise RunError(f"{path}: unreadable ({exc.strerror or type(exc).__name__})") from None
    if len(data) > JSON_LIMIT:
        raise RunError(f"{path}: larger than {JSON_LIMIT >> 20} MB; not a file barenet wrote")
    try:
        return json.loads(data)
    except RecursionError:
        raise RunError(f"{path}: nested too deeply; not a file barenet wrote") from None
    except ValueError as exc:             # bad JSON, not UTF-8, a 5000-digit number
        raise RunError(f"{path}: not valid JSON ({cut(exc, 100)})") from None


def _number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _check_history(path: Path, history) -> list[dict]:
    """A history is a list of per-epoch tables of finite numbers (what training writes)."""
    from .runs import RunError

    if not isinstance(history, list):
        raise RunError(f"{path}: expected a list of epochs, got {short(history)}")
    for i, row in enumerate(history):
        if not isinstance(row, dict):
            raise RunError(f"{path}: epoch entry {i} is not a table of numbers: {short(row)}")
        for key, value in row.items():
            if not _number(value):
                raise RunError(f"{path}: epoch entry {i}, key {short(key)}: expected a "
                               f"finite number, got {short(value)}")
    return history


def _check_table(path: Path, table, numbers: tuple[str, ...] = ()) -> dict:
    from .runs import RunError

    if not isinstance(table, dict):
        raise RunError(f"{path}: expected a JSON object, got {short(table)}")
    for key in numbers:
        if table.get(key) is not None and not _number(table[key]):
            raise RunError(f"{path}: key {key!r}: expected a finite number, got "
                           f"{short(table[key])}")
    return table


def _load(run: Path) -> dict:
    """config, history and metrics of a run directory, each checked: one line naming the file
    and the key when one of them is not what training writes."""
    metrics = _read_json(run, "metrics.json", required=False)
    return {"config": _check_table(run / "config.json", _read_json(run, "config.json")),
            "history": _check_history(run / "history.json", _read_json(run, "history.json")),
            "metrics": {} if metrics is None else _check_table(
                run / "metrics.json", metrics, ("test_accuracy", "train_seconds_total"))}


def _check_out(out: str) -> Path:
    """--out is a PNG file to write: refuse, before reading any run, what cannot be one."""
    path = Path(out)
    if not out.strip() or path.is_dir():
        raise click.BadParameter(f"{out!r} is a directory or empty; give a file name such as "
                                 f"compare.png", param_hint="--out")
    parent = path.parent
    if not parent.is_dir():
        raise click.BadParameter(f"the folder {parent} does not exist", param_hint="--out")
    return path


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

    out = _check_out(out)
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
