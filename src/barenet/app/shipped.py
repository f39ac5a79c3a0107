"""Trained models that ship inside the package, usable by name wherever a MODEL goes.

`barenet predict digit.png`, `barenet serve` and `barenet explore` use DEFAULT when no MODEL
is given; `barenet evaluate cnn` evaluates the shipped CNN. The files are ordinary barenet
model files (safetensors + JSON metadata, never pickle) in barenet/models/; how each was
trained is the exact command below, and its metrics travel in its own metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import click


@dataclass(frozen=True)
class Shipped:
    name: str
    file: str
    title: str
    command: str
    # Accuracy on the non-MNIST handwriting set (benchmarks/handwriting.py, 10 per digit per
    # font, seed 0), measured when the file was made.
    handwriting: float | None = None


SHIPPED = {s.name: s for s in (
    Shipped("cnn", "cnn.safetensors",
            "cnn-best: conv 32-64 with batch norm, trained on augmented digits",
            "barenet train --config configs/cnn-best.toml --seed 0 --out runs/cnn-best-s0",
            handwriting=0.8892),
    Shipped("mlp", "mlp.safetensors",
            "the default MLP: 784-256-128-10 ReLU, dropout 0.2, 20 epochs",
            "barenet train --out runs/default", handwriting=0.8472),
)}
DEFAULT = "cnn"


def shipped_path(name: str) -> Path | None:
    """The packaged file of the shipped model `name`, or None if there is no such model."""
    entry = SHIPPED.get(name)
    if entry is None:
        return None
    path = Path(str(resources.files("barenet") / "models" / entry.file))
    return path if path.is_file() else None


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def command(as_json):
    """List the trained models that ship with barenet (usable by name as MODEL)."""
    import json

    from ..serialize import load_model

    rows = []
    for entry in SHIPPED.values():
        path = shipped_path(entry.name)
        if path is None:
            continue
        _, meta = load_model(path)
        metrics = meta.get("metrics") or {}
        rows.append({"name": entry.name, "default": entry.name == DEFAULT,
                     "title": entry.title, "mnist_test_accuracy": metrics.get("test_accuracy"),
                     "handwriting_accuracy": entry.handwriting,
                     "size_kb": round(path.stat().st_size / 1024), "command": entry.command,
                     "path": str(path)})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return 0
    if not rows:
        click.echo("no shipped models in this installation")
        return 1
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="shipped models (use the name wherever a MODEL goes)")
    for column in ("name", "what", "MNIST test", "handwriting", "size", "made by"):
        table.add_column(column, overflow="fold")

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f} %"

    for r in rows:
        table.add_row(r["name"] + (" (default)" if r["default"] else ""), escape(r["title"]),
                      pct(r["mnist_test_accuracy"]), pct(r["handwriting_accuracy"]),
                      f"{r['size_kb']} kB", escape(r["command"]))
    Console().print(table)
    return 0
