"""`barenet embed MODEL [--layer K] [--method pca|tsne]`: what a hidden layer has learned, as a map.

The test images' activations at one layer, flattened to vectors, projected to two dimensions
and coloured by the true class; misclassified images are marked. Well-separated clusters mean
the layer already sorts the digits; the raw pixels (`--layer input`) for comparison do not.

PCA is written here in NumPy: centre the rows, take the SVD X = U S V^T, and the first two
columns of U S are the coordinates (the directions of largest variance). t-SNE comes from
scikit-learn (the optional `sklearn` extra): a correct, fast t-SNE needs Barnes-Hut trees and a
careful optimizer, which would be most of this module and none of barenet's subject.
"""

from __future__ import annotations

import click
import numpy as np

from .common import Failure, check_out_file, load_model_arg, test_set


def pca(x: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) rows -> ((N, k) coordinates, (k,) share of the variance each explains)."""
    centred = x.astype(np.float64) - x.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)       # centred = U diag(s) V^T
    coords = u[:, :k] * s[:k]
    total = float((s ** 2).sum()) or 1.0
    return coords, (s[:k] ** 2) / total


def tsne(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE
    start = pca(x, min(50, x.shape[1], len(x)))[0]              # the usual PCA-50 first step
    return TSNE(2, init="pca", random_state=seed, perplexity=min(30.0, (len(x) - 1) / 3)
                ).fit_transform(start)


def default_layer(net) -> int:
    """The last hidden layer: the output the final Dense reads (Dropout skipped)."""
    k = len(net.layers) - 2
    while k > 0 and type(net.layers[k]).__name__ == "Dropout":
        k -= 1
    return k


def activations(net, images: np.ndarray, layer: str | None) -> tuple[np.ndarray, str]:
    """((N, D) activations at `layer`, its description). layer: None (default), "input",
    "output" or an index (negative from the end)."""
    from ..model import Sequential, as_input
    if layer == "input":
        return as_input(images).reshape(len(images), -1), "input pixels"
    if not hasattr(net, "layers"):                              # an ensemble
        if layer not in (None, "output"):
            raise Failure("an ensemble has no shared hidden layers: use --layer output "
                          "(its averaged probabilities) or --layer input")
        return net.predict_proba(images), "ensemble's averaged probabilities"
    n = len(net.layers)
    k = default_layer(net) if layer is None else n - 1 if layer == "output" else _index(layer, n)
    out = Sequential(*net.layers[:k + 1]).eval().logits(images)
    what = type(net.layers[k]).__name__
    return out.reshape(len(out), -1), f"layer {k} ({what}, {int(np.prod(out.shape[1:]))} values)"


def _index(layer: str, n: int) -> int:
    try:
        k = int(layer)
    except ValueError:
        raise Failure(f"--layer {layer}: give a layer number 0-{n - 1} (negative counts from "
                      f"the end), input or output") from None
    if not -n <= k < n:
        raise Failure(f"--layer {layer}: the model has layers 0-{n - 1}")
    return k % n


def figure(coords, labels, predicted, title: str, subtitle: str, names=None):
    from .figures import new_figure
    fig = new_figure(7.4, 6.4)
    ax = fig.add_subplot(1, 1, 1)
    cmap = __import__("matplotlib").colormaps["tab10"]
    for c in range(10):
        mine = labels == c
        ax.scatter(coords[mine, 0], coords[mine, 1], s=6, color=cmap(c), alpha=0.6,
                   label=str(c) if names is None else names[c], linewidths=0)
    wrong = predicted != labels
    ax.scatter(coords[wrong, 0], coords[wrong, 1], s=28, facecolors="none",
               edgecolors="k", linewidths=0.8, label=f"misclassified ({int(wrong.sum())})")
    for c in range(10):                                         # class names at the centres
        mine = labels == c
        if mine.any():
            cx, cy = np.median(coords[mine], axis=0)
            ax.text(cx, cy, str(c) if names is None else names[c].split("/")[0],
                    fontsize=12, weight="bold", ha="center", va="center",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.7, "lw": 0})
    ax.set_title(f"{title}\n{subtitle}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=2, loc="upper right", ncol=2, framealpha=0.8)
    fig.subplots_adjust(left=0.03, right=0.97, bottom=0.03, top=0.9)
    return fig


@click.command("embed")
@click.argument("model", required=False)
@click.option("--layer", default=None,
              help="Layer number (0 = first; negative from the end), input or output "
                   "[default: the last hidden layer].")
@click.option("--method", type=click.Choice(["pca", "tsne"]), default="pca", show_default=True)
@click.option("--images", "n_images", type=click.IntRange(20, 10_000), default=2000,
              show_default=True, help="Test images (a seeded sample).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default="embed.png", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), help="MNIST cache directory.")
def command(model, layer, method, n_images, seed, out, data_dir):
    """A 2-D map (PCA or t-SNE) of the test images' activations at one layer of MODEL,
    coloured by true class, misclassified images circled."""
    from pathlib import Path

    from .. import data
    from ..modelfile import atomic_write_bytes
    from .figures import png_bytes
    from .robustness import sample

    if method == "tsne":
        from .extras import require
        require("sklearn", "embed --method tsne")
    out = check_out_file(out)
    net, meta = load_model_arg(model)
    if hasattr(net, "layers") and layer not in (None, "input", "output"):
        _index(layer, len(net.layers))                  # a bad --layer before any work
    dataset, x_test, y_test = test_set(meta, data_dir)
    images, labels = sample(x_test, y_test, n_images, seed)
    values, where = activations(net, images, layer)
    if method == "pca":
        coords, share = pca(values)
        how = f"PCA: the two directions explain {share[0]:.0%} + {share[1]:.0%} of the variance"
    else:
        coords, how = tsne(values, seed), "t-SNE (scikit-learn), perplexity 30, after PCA-50"
    predicted = net.predict(images)
    title = f"{Path(model or 'cnn').name}: {where}, {len(images):,} {dataset} test images"
    fig = figure(coords, labels, predicted, title, how, data.class_names(dataset))
    atomic_write_bytes(out, png_bytes(fig))
    click.echo(f"{where}: {how}; wrote {out}")
    return 0
