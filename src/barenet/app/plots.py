"""Pictures of a run: training curves, confusion matrix, image grids, calibration, saliency.

Each function returns a matplotlib Figure built without pyplot (no global state, no GUI);
`png_bytes` and `save_png` render it with Agg. The charts are here; the pictures of digits
(image grids, weights, saliency) are in pictures.py and the pieces every plot shares in
figures.py, both also reachable from here. matplotlib is imported inside the functions:
`pip install barenet[plots]`.

Functions that name classes take `names`, the class names of the data set (Fashion-MNIST);
the default None means the labels are digits, written as themselves.
"""

from __future__ import annotations

import math

import numpy as np

from .figures import (
    BAD,
    GOOD,
    TRAIN,
    VAL,
    colormap,
    label_noun,
    margins,
    new_figure,
    percent_axis,
    plain_log_axis,
    png_bytes,
    save_png,
)
from .pictures import (
    first_layer_weights,
    misclassified_grid,
    prediction_grid,
    saliency_figure,
    sample_indices,
)

__all__ = ["compare_curves", "confidence_histogram", "confusion_heatmap", "first_layer_weights",
           "misclassified_grid", "per_class_accuracy_bars", "png_bytes", "prediction_grid",
           "reliability_diagram", "saliency_figure", "sample_indices", "save_png",
           "training_curves"]


def _column(history: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [(r.get("epoch", i + 1), r[key]) for i, r in enumerate(history)
            if r.get(key) is not None]
    if not rows:
        return np.zeros(0), np.zeros(0)
    epochs, values = zip(*rows)
    return np.asarray(epochs), np.asarray(values, np.float64)


def training_curves(history: list[dict], title: str = "Training curves"):
    """Loss (log scale), accuracy and learning rate per epoch; train and validation.
    None without any epoch (an ensemble's run directory)."""
    if not any(r.get("loss") is not None or r.get("accuracy") is not None for r in history):
        return None
    has_lr = any(r.get("lr") is not None for r in history)
    fig = new_figure(13.0 if has_lr else 9.0, 3.9)
    axes = fig.subplots(1, 3 if has_lr else 2)
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        for prefix, color, name in (("", TRAIN, "train"), ("val_", VAL, "validation")):
            epochs, values = _column(history, prefix + key)
            if len(values):
                ax.plot(epochs, values, "o-", ms=3, lw=1.6, color=color, label=name)
        ax.set(xlabel="epoch", ylabel=label, title=label.capitalize())
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    if all(v > 0 for _, v in zip(*_column(history, "loss"))):
        axes[0].set_yscale("log")
        axes[0].set_ylabel("loss (log scale)")
        plain_log_axis(axes[0].yaxis)
    percent_axis(axes[1].yaxis)
    epochs, val_acc = _column(history, "val_accuracy")
    if len(val_acc):
        best = int(np.argmax(val_acc))
        axes[1].annotate(f"best {val_acc[best]:.2%}\n(epoch {epochs[best]})",
                         (epochs[best], val_acc[best]), xytext=(0, -38),
                         textcoords="offset points", ha="center", fontsize=8, color=VAL,
                         arrowprops={"arrowstyle": "->", "color": VAL, "lw": 0.8})
    if has_lr:
        epochs, lr = _column(history, "lr")
        axes[2].plot(epochs, lr, "o-", ms=3, lw=1.6, color="#8250df")
        axes[2].set(xlabel="epoch", ylabel="learning rate", title="Learning rate (end of epoch)")
        axes[2].grid(alpha=0.3)
        axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for ax in axes:
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=12)
    margins(fig, top=0.65, wspace=0.3)
    return fig


def confusion_heatmap(cm: np.ndarray, title: str = "Confusion matrix", *, names=None):
    """Counts in every cell; colour on a log scale so that single mistakes still show."""
    from matplotlib.colors import LogNorm

    cm = np.asarray(cm)
    k = len(cm)
    left, bottom = (0.7, 0.6) if names is None else (1.35, 1.15)    # inches, room for names
    width, height = 6.6 + left, 5.75 + bottom
    fig = new_figure(width, height)
    ax = fig.add_axes((left / width, bottom / height, 5.3 / width, 5.3 / height))
    cax = fig.add_axes(((left + 5.45) / width, bottom / height, 0.2 / width, 5.3 / height))
    shown = np.ma.masked_equal(cm, 0)
    cmap = colormap("Blues").with_extremes(bad="white")
    image = ax.imshow(shown, cmap=cmap, norm=LogNorm(vmin=1, vmax=max(cm.max(), 2)))
    dark = LogNorm(vmin=1, vmax=max(cm.max(), 2))(np.maximum(cm, 1)) > 0.6
    fontsize = 9 if k <= 10 else 7
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=fontsize,
                        color="white" if dark[i, j] else "black",
                        fontweight="bold" if i == j else "normal")
    noun = label_noun(names)
    ax.set(xticks=range(k), yticks=range(k), xlabel=f"predicted {noun}", ylabel=f"true {noun}")
    if names is not None:
        ax.set_xticklabels(names, rotation=40, ha="right", rotation_mode="anchor")
        ax.set_yticklabels(names)
    ax.set_title(f"{title}: {int(np.trace(cm))} of {int(cm.sum())} right, "
                 f"{int(cm.sum() - np.trace(cm))} wrong", fontsize=11)
    ax.tick_params(length=0)
    cbar = fig.colorbar(image, cax=cax)
    cbar.set_label("images (log scale)")
    plain_log_axis(cbar.ax.yaxis, minor=False)
    return fig


def confidence_histogram(labels: np.ndarray, probs: np.ndarray, *, names=None):
    """Histogram of top-1 probability, right and wrong predictions separately (log counts)."""
    confidence = probs.max(axis=1)
    right = probs.argmax(axis=1) == labels
    fig = new_figure(7.6, 4.4)
    ax = fig.subplots()
    low = np.floor(min(confidence.min(), 1.0 / probs.shape[1]) * 20) / 20
    bins = np.linspace(low, 1.0, int(round((1.0 - low) * 40)) + 1)
    for mask, color, name in ((right, GOOD, "right"), (~right, BAD, "wrong")):
        if mask.any():
            ax.hist(confidence[mask], bins=bins, color=color, alpha=0.55, label=(
                f"{name}: {mask.sum()} images, mean confidence {confidence[mask].mean():.1%}"),
                histtype="stepfilled", edgecolor=color)
    ax.set_yscale("log")
    plain_log_axis(ax.yaxis)
    ax.set(xlabel=f"confidence (probability of the predicted {label_noun(names)})",
           ylabel="test images (log scale)",
           title="How sure the network is, when right and when wrong")
    percent_axis(ax.xaxis)
    ax.legend(frameon=False, loc="upper left")
    ax.grid(alpha=0.3)
    margins(fig, left=0.8)
    return fig


def reliability_diagram(bins: list[dict], ece: float, *, names=None):
    """Accuracy against mean confidence per bin; below, how many images each bin holds."""
    fig = new_figure(6.4, 6.2)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    lower = np.array([b["lower"] for b in bins])
    width = np.array([b["upper"] - b["lower"] for b in bins])
    count = np.array([b["count"] for b in bins])
    filled = count > 0
    acc = np.array([b["accuracy"] or 0.0 for b in bins])
    conf = np.array([b["confidence"] or 0.0 for b in bins])
    top.bar(lower[filled], acc[filled], width[filled], align="edge", color=TRAIN, alpha=0.8,
            edgecolor="white", label="accuracy in the bin")
    gap_low, gap_high = np.minimum(acc, conf), np.maximum(acc, conf)
    top.bar(lower[filled], (gap_high - gap_low)[filled], width[filled], bottom=gap_low[filled],
            align="edge", color="none", edgecolor=BAD, hatch="///", lw=0.8,
            label="gap to mean confidence")
    top.plot([0, 1], [0, 1], "--", color="#57606a", lw=1, label="perfect calibration")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy",
            title=f"Reliability diagram: expected calibration error {ece:.2%}")
    percent_axis(top.yaxis)
    top.legend(frameon=False, loc="upper left", fontsize=9)
    top.grid(alpha=0.3)
    bottom.bar(lower[filled], count[filled], width[filled], align="edge", color="#8c959f",
               edgecolor="white")
    bottom.set_yscale("log")
    plain_log_axis(bottom.yaxis, minor=False)
    bottom.set(xlabel=f"confidence (probability of the predicted {label_noun(names)})",
               ylabel="images\n(log scale)")
    percent_axis(bottom.xaxis)
    bottom.grid(alpha=0.3)
    margins(fig, left=0.95, hspace=0.12)
    return fig


def coverage_curve(rows: list[dict]):
    """The reject option: accuracy on the answered images against the share answered, one
    point per confidence threshold (barenet.metrics.coverage_curve)."""
    rows = [r for r in rows if r["accuracy"] is not None]
    fig = new_figure(6.4, 4.2)
    ax = fig.subplots()
    coverage = [r["coverage"] for r in rows]
    accuracy = [r["accuracy"] for r in rows]
    ax.plot(coverage, accuracy, "o-", color=TRAIN, ms=4, lw=1.6)
    for r in rows:
        ax.annotate(f"{r['threshold']:g}", (r["coverage"], r["accuracy"]), fontsize=7,
                    xytext=(4, -10), textcoords="offset points", color="#57606a")
    ax.set(xlabel="share of test images answered (the rest: \"not sure\")",
           ylabel="accuracy on those answered",
           title="Reject option: answer only when the top probability ≥ t (labels: t)")
    percent_axis(ax.xaxis)
    percent_axis(ax.yaxis)
    ax.invert_xaxis()                       # stricter thresholds to the right
    ax.grid(alpha=0.3)
    margins(fig, left=1.05)
    return fig


def per_class_accuracy_bars(per_class: list[dict], overall: float, *, names=None):
    """Recall (accuracy) per class, labelled, with the overall accuracy as a dashed line."""
    from matplotlib.ticker import MultipleLocator, PercentFormatter

    noun = label_noun(names)
    fig = new_figure(7.6, 4.2 if names is None else 4.4)
    ax = fig.subplots()
    recall = np.array([row["recall"] for row in per_class])
    classes = [row["class"] for row in per_class]
    worst = int(np.argmin(recall)) if recall.min() < recall.max() else -1
    ax.bar(classes, recall, color=[BAD if i == worst else TRAIN for i in range(len(recall))],
           width=0.7)
    for c, v in zip(classes, recall):
        ax.text(c, v, f"{v:.1%}", ha="center", va="bottom", fontsize=8)
    ax.axhline(overall, color="#57606a", ls="--", lw=1)
    low = max(0.0, math.floor((recall.min() - 0.02) * 50) / 50)     # zoom in, on whole 2 %
    ax.set(ylim=(low, 1.0 + (1.0 - low) * 0.08), xticks=classes, xlabel=f"true {noun}",
           ylabel="accuracy (recall)")
    if names is not None:                           # "T-shirt/\ntop", "Ankle\nboot": no overlap
        ax.set_xticklabels([names[c].replace("/", "/\n").replace(" ", "\n") for c in classes])
    step = 0.005 if 1 - low <= 0.03 else 0.01 if 1 - low <= 0.1 else None
    if step:
        ax.yaxis.set_major_locator(MultipleLocator(step))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1 if step == 0.005 else 0))
    title = f"Accuracy per {noun} (dashed: overall {overall:.2%}"
    title += ", worst in red" if worst >= 0 else ""
    ax.set_title(title + (f"; the axis starts at {low:.0%})" if low > 0 else ")"), fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    margins(fig, left=0.85, bottom=0.6 if names is None else 0.8)
    return fig


def compare_curves(histories: dict[str, list[dict]]):
    """Loss and accuracy of several runs on shared axes: validation solid, train dashed."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(12.0, 4.6)
    loss_ax, acc_ax = fig.subplots(1, 2)
    colors = colormap("tab10").colors
    handles = []
    for i, (name, history) in enumerate(histories.items()):
        color = colors[i % len(colors)]
        for key, ax in (("loss", loss_ax), ("accuracy", acc_ax)):
            for prefix, style, width in (("val_", "-", 1.8), ("", "--", 1.0)):
                epochs, values = _column(history, prefix + key)
                if len(values):
                    ax.plot(epochs, values, style, lw=width, color=color,
                            alpha=1.0 if prefix else 0.7)
        handles.append(Line2D([], [], color=color, lw=2.5, label=name))
    loss_ax.set(xlabel="epoch", ylabel="loss (log scale)", yscale="log", title="Loss")
    plain_log_axis(loss_ax.yaxis)
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    percent_axis(acc_ax.yaxis)
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles += [Line2D([], [], color="#57606a", ls="-", lw=1.8, label="validation"),
                Line2D([], [], color="#57606a", ls="--", lw=1.0, label="train")]
    ncol = min(6, len(handles))
    rows = math.ceil(len(handles) / ncol)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, frameon=False, fontsize=9)
    fig.suptitle("Runs compared", fontsize=12)
    margins(fig, top=0.65, bottom=0.65 + 0.22 * rows, wspace=0.25)
    return fig
