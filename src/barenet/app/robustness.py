"""`barenet robustness MODEL [MODEL ...]`: test accuracy as each corruption grows.

One curve per corruption (data/corrupt.py) and per model, on the same seeded sample of test
images, plus accuracy against the FGSM step eps (adversarial.py). Writes robustness.json and
robustness.png; `barenet report` shows them when they sit in the run directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from .common import Failure, dataset_of, load_model_arg

FGSM_EPS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
JSON_FILE, PNG_FILE = "robustness.json", "robustness.png"


def sample(x_test: np.ndarray, y_test: np.ndarray, n: int, seed: int):
    """The same n test images for every model (all of them when n >= the test set)."""
    if n >= len(x_test):
        return x_test, y_test
    chosen = np.sort(np.random.default_rng(seed).choice(len(x_test), n, replace=False))
    return x_test[chosen], y_test[chosen]


def curves(model, images: np.ndarray, labels: np.ndarray, names, seed: int = 0,
           fgsm: bool = True, clean: float | None = None) -> dict:
    """{corruption: {"levels": [...], "accuracy": [...]}} for one model; "fgsm" too when the
    model has a gradient (not an ensemble) and fgsm is asked for. clean: the accuracy on the
    images themselves, which every identity level shares (computed when not given)."""
    from ..adversarial import fgsm_sweep, has_gradient
    from ..data.corrupt import CORRUPTIONS, IDENTITY_LEVEL, corrupt

    def accuracy(x) -> float:
        return float(np.mean(model.predict(x) == labels))

    if clean is None:
        clean = accuracy(images)
    out = {}
    for name in names:
        levels = CORRUPTIONS[name][1]
        out[name] = {"levels": list(levels), "accuracy": [
            clean if level == IDENTITY_LEVEL.get(name, 0) else
            accuracy(corrupt(images, name, level, seed)) for level in levels]}
    if fgsm and has_gradient(model):
        out["fgsm"] = {"levels": list(FGSM_EPS), "accuracy": [
            accuracy(x) for x in fgsm_sweep(model, images, labels, FGSM_EPS)]}
    return out


def measure(models: list[tuple[str, str, object]], images: np.ndarray, labels: np.ndarray,
            dataset: str, names, seed: int = 0, fgsm: bool = True) -> dict:
    """What robustness.json holds: for each (name, source, model), the clean accuracy and
    its curves (see curves), on the same images."""
    result = {"dataset": dataset, "images": len(images), "seed": seed, "models": []}
    for name, source, net in models:
        clean = float(np.mean(net.predict(images) == labels))
        result["models"].append({"name": name, "model": source, "clean": clean,
                                 "curves": curves(net, images, labels, names, seed, fgsm,
                                                  clean)})
    return result


def axis_label(name: str) -> str:
    from ..data.corrupt import CORRUPTIONS
    return "FGSM step ε (pixel range)" if name == "fgsm" else CORRUPTIONS[name][2]


def figure(result: dict):
    """A grid of small plots, one per corruption, a line per model; 0-100 % accuracy."""
    from .figures import new_figure

    names = list(result["models"][0]["curves"])
    for extra in (m["curves"] for m in result["models"][1:]):
        names += [k for k in extra if k not in names]
    cols = 3
    rows = -(-len(names) // cols)
    fig = new_figure(3.6 * cols, 2.7 * rows + 0.6)
    fig.suptitle(f"Accuracy as the test images get worse ({result['images']:,} "
                 f"{result['dataset']} test images, seed {result['seed']})", fontsize=11)
    colors = ["#0969da", "#d1242f", "#1a7f37", "#8250df", "#bf8700", "#57606a"]
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        for j, model in enumerate(result["models"]):
            curve = model["curves"].get(name)
            if curve:
                ax.plot(curve["levels"], [100 * a for a in curve["accuracy"]], "o-", ms=3,
                        color=colors[j % len(colors)], label=model["name"])
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(axis_label(name), fontsize=8)
        ax.set_ylim(0, 101)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel("accuracy %", fontsize=8)
        if name == "contrast":
            ax.invert_xaxis()                     # worse to the right, like the others
    fig.axes[0].legend(fontsize=7, loc="lower left")
    fig.subplots_adjust(left=0.07, right=0.98, top=1 - 0.55 / fig.get_figheight(),
                        bottom=0.08, hspace=0.75, wspace=0.25)
    return fig


def _names(args: tuple[str, ...]) -> list[str]:
    """Short distinct labels: the run directory's or file's name, else the whole argument."""
    short = [Path(a.rstrip("/")).name or a for a in args]
    return short if len(set(short)) == len(short) else list(args)


def _load(models: tuple[str, ...], data_dir):
    from .. import data
    loaded = [load_model_arg(m) for m in models]
    datasets = {dataset_of(meta) for _, meta in loaded}
    if len(datasets) > 1:
        raise Failure(f"the models were trained on different data sets "
                      f"({', '.join(sorted(datasets))}): compare models of one data set")
    dataset = datasets.pop()
    _, (x_test, y_test) = data.load_dataset(dataset, data_dir)
    return [net for net, _ in loaded], dataset, x_test, y_test


def write(result: dict, out: Path) -> tuple[Path, Path]:
    from ..modelfile import atomic_write_bytes
    out.mkdir(parents=True, exist_ok=True)
    from .figures import png_bytes
    atomic_write_bytes(out / PNG_FILE, png_bytes(figure(result)))
    atomic_write_bytes(out / JSON_FILE, (json.dumps(result, indent=2) + "\n").encode())
    return out / JSON_FILE, out / PNG_FILE


def _table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"test accuracy ({result['images']:,} images), clean and at the "
                        f"strongest level of each corruption")
    table.add_column("images")
    for model in result["models"]:
        table.add_column(model["name"], justify="right")
    table.add_row("clean", *(f"{100 * m['clean']:.1f} %" for m in result["models"]))
    for name, curve in result["models"][0]["curves"].items():
        ends = [0, -1] if curve["levels"][0] < 0 else [-1]         # stroke: thinner and thicker
        for i in ends:
            cells = [m["curves"][name]["accuracy"][i] if name in m["curves"] else None
                     for m in result["models"]]
            table.add_row(f"{name}: {axis_label(name)} = {curve['levels'][i]}",
                          *("-" if a is None else f"{100 * a:.1f} %" for a in cells))
    Console().print(table)


@click.command("robustness")
@click.argument("models", nargs=-1)
@click.option("--images", "n_images", type=click.IntRange(10, 10_000), default=2000,
              show_default=True, help="Test images per level (a seeded sample).")
@click.option("--corruptions", default="all", show_default=True,
              help="Comma-separated: noise,rotate,shift,stroke,blur,occlude,contrast,invert.")
@click.option("--no-fgsm", is_flag=True, help="Leave out the adversarial (FGSM) curve.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for robustness.json/.png [default: the first MODEL's run "
                   "directory, else ./robustness].")
@click.option("--data-dir", type=click.Path(file_okay=False), help="MNIST cache directory.")
def command(models, n_images, corruptions, no_fgsm, seed, out, data_dir):
    """Accuracy curves as test images get noisier, rotated, shifted, thinner or thicker,
    blurred, occluded, faded or inverted, and under FGSM attack. Several MODELs (run dirs,
    model files or shipped names) are drawn on the same axes."""
    from ..adversarial import has_gradient
    from ..data.corrupt import CORRUPTIONS
    models = models or ("cnn",)
    names = list(CORRUPTIONS) if corruptions == "all" else \
        [c.strip() for c in corruptions.split(",") if c.strip()]
    unknown = [c for c in names if c not in CORRUPTIONS]
    if unknown or not names:
        raise Failure(f"--corruptions: unknown {', '.join(unknown) or '(none given)'}; choose "
                      f"from {', '.join(CORRUPTIONS)} or all")
    if out is None:
        first = Path(models[0])
        out = first if first.is_dir() else Path("robustness")
    nets, dataset, x_test, y_test = _load(models, data_dir)
    images, labels = sample(x_test, y_test, n_images, seed)
    labelled = list(zip(_names(models), models, nets))
    result = measure(labelled, images, labels, dataset, names, seed, not no_fgsm)
    for name, _, net in labelled:
        if not no_fgsm and not has_gradient(net):
            click.echo(f"note: {name} is an ensemble: no FGSM curve (no single gradient)",
                       err=True)
    _table(result)
    json_path, png_path = write(result, Path(out))
    click.echo(f"wrote {png_path} and {json_path}")
    return 0
