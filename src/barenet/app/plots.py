"""Pictures of a run: training curves, confusion matrix, image grids, calibration, saliency.

Each function returns a matplotlib Figure built without pyplot (no global state, no GUI);
`png_bytes` and `save_png` render it with Agg. Grids of images are drawn as one mosaic image
with text on top rather than one axes per image, which keeps a report to a few seconds.
matplotlib is imported inside the functions: `pip install barenet[plots]`.

Functions that name classes take `names`, the class names of the data set (Fashion-MNIST);
the default None means the labels are digits, written as themselves.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

DPI = 120
GOOD, BAD = "#1a7f37", "#cf222e"            # green for right, red for wrong
TRAIN, VAL = "#0969da", "#d1242f"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=DPI)


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def save_png(fig, path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(png_bytes(fig))
    return path


def _noun(names) -> str:
    """What a label is called in titles and axis labels."""
    return "digit" if names is None else "class"


def _label(k, names, short: bool = False) -> str:
    """Label k as written: the digit itself, or its class name ("T-shirt" when short)."""
    if names is None:
        return str(k)
    return names[k].split("/")[0] if short else names[k]


def _margins(fig, left=0.75, right=0.2, bottom=0.6, top=0.45, wspace=None, hspace=None):
    """Fixed margins in inches: cheaper than tight_layout, which draws the figure twice."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=wspace, hspace=hspace)


def _plain_log_axis(axis, minor: bool = True) -> None:
    """Tick labels like 0.05 instead of 5 x 10^-2 (and no slow mathtext)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.1e}"[0] in "25" else "")
                             if minor else NullFormatter())


def _percent_axis(axis) -> None:
    from matplotlib.ticker import PercentFormatter
    axis.set_major_formatter(PercentFormatter(1.0, decimals=None))


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
    fig = _figure(13.0 if has_lr else 9.0, 3.9)
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
        _plain_log_axis(axes[0].yaxis)
    _percent_axis(axes[1].yaxis)
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
    _margins(fig, top=0.65, wspace=0.3)
    return fig


def confusion_heatmap(cm: np.ndarray, title: str = "Confusion matrix", *, names=None):
    """Counts in every cell; colour on a log scale so that single mistakes still show."""
    from matplotlib.colors import LogNorm

    cm = np.asarray(cm)
    k = len(cm)
    left, bottom = (0.7, 0.6) if names is None else (1.35, 1.15)    # inches, room for names
    width, height = 6.6 + left, 5.75 + bottom
    fig = _figure(width, height)
    ax = fig.add_axes((left / width, bottom / height, 5.3 / width, 5.3 / height))
    cax = fig.add_axes(((left + 5.45) / width, bottom / height, 0.2 / width, 5.3 / height))
    shown = np.ma.masked_equal(cm, 0)
    cmap = _cmap("Blues").with_extremes(bad="white")
    image = ax.imshow(shown, cmap=cmap, norm=LogNorm(vmin=1, vmax=max(cm.max(), 2)))
    dark = LogNorm(vmin=1, vmax=max(cm.max(), 2))(np.maximum(cm, 1)) > 0.6
    fontsize = 9 if k <= 10 else 7
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=fontsize,
                        color="white" if dark[i, j] else "black",
                        fontweight="bold" if i == j else "normal")
    noun = _noun(names)
    ax.set(xticks=range(k), yticks=range(k), xlabel=f"predicted {noun}", ylabel=f"true {noun}")
    if names is not None:
        ax.set_xticklabels(names, rotation=40, ha="right", rotation_mode="anchor")
        ax.set_yticklabels(names)
    ax.set_title(f"{title}: {int(np.trace(cm))} of {int(cm.sum())} right, "
                 f"{int(cm.sum() - np.trace(cm))} wrong", fontsize=11)
    ax.tick_params(length=0)
    cbar = fig.colorbar(image, cax=cax)
    cbar.set_label("images (log scale)")
    _plain_log_axis(cbar.ax.yaxis, minor=False)
    return fig


def _cmap(name: str):
    import matplotlib
    return matplotlib.colormaps[name]


def _ink(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W), white ink on black -> RGB floats (N, H, W, 3), black ink on white."""
    gray = 1.0 - np.asarray(images, np.float64) / 255.0
    return np.repeat(gray[..., None], 3, axis=-1)


def _colored(maps: np.ndarray, cmap: str, symmetric: bool) -> np.ndarray:
    """(N, H, W) floats -> RGB (N, H, W, 3), each map scaled to its own range."""
    maps = np.asarray(maps, np.float64)
    flat = maps.reshape(len(maps), -1)
    if symmetric:                                          # 0 is the colormap's middle
        top = np.abs(flat).max(axis=1)[:, None, None]
        scaled = 0.5 + 0.5 * np.divide(maps, top, out=np.zeros_like(maps), where=top > 0)
    else:
        low = flat.min(axis=1)[:, None, None]
        span = flat.max(axis=1)[:, None, None] - low
        scaled = np.divide(maps - low, span, out=np.zeros_like(maps), where=span > 0)
    return _cmap(cmap)(scaled)[..., :3]


def _tile_figure(tiles: np.ndarray, cols: int, *, title: str, labels=None, colors=None,
                 row_labels=None, tile_inches: float = 0.95, label_lines: int = 1,
                 fontsize: float = 8.0, caption: str | None = None):
    """One axes showing RGB tiles (N, h, w, 3) in a grid, each framed, with a label above.

    Rows whose labels are all empty get no space for them.
    """
    n, h, w, _ = tiles.shape
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    labels = list(labels) if labels is not None else [""] * n
    px = tile_inches / w                                        # inches per image pixel
    gap = max(2, round(0.06 / px))
    head = math.ceil(label_lines * fontsize * 1.3 / 72 / px) + 1
    heads = [head if any(labels[r * cols:(r + 1) * cols]) else 0 for r in range(rows)]
    tops = np.cumsum([0] + [gap + hd + h for hd in heads])      # top pixel row of each row
    mosaic = np.ones((tops[-1] + gap, cols * (w + gap) + gap, 3))
    spots = []
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = tops[r] + gap + heads[r], c * (w + gap) + gap
        mosaic[y - 1:y + h + 1, x - 1:x + w + 1] = 0.75          # 1-pixel grey frame
        mosaic[y:y + h, x:x + w] = tiles[i]
        spots.append((y, x))
    left = 0.4 if row_labels else 0.05
    top = 0.5 + (0.08 + 0.17 * (caption.count("\n") + 1) if caption else 0.0)
    width = mosaic.shape[1] * px + left + 0.05
    height = mosaic.shape[0] * px + top + 0.05
    fig = _figure(width, height)
    ax = fig.add_axes((left / width, 0.05 / height, mosaic.shape[1] * px / width,
                       mosaic.shape[0] * px / height))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    for i, (y, x) in enumerate(spots):
        if labels[i]:
            ax.text(x + w / 2 - 0.5, y - 1.8, labels[i], ha="center", va="bottom",
                    fontsize=fontsize, linespacing=1.1,
                    color=colors[i] if colors is not None else "black")
    for r, text in enumerate(row_labels or ()):
        ax.text(-0.5, tops[r] + gap + heads[r] + h / 2, text, ha="right", va="center",
                fontsize=fontsize + 1, rotation=90)
    fig.text(0.5, 1 - 0.08 / height, title, ha="center", va="top", fontsize=12)
    if caption:
        fig.text(0.5, 1 - 0.38 / height, caption, ha="center", va="top", fontsize=9,
                 color="#555555")
    return fig


def misclassified_grid(images: np.ndarray, labels: np.ndarray, probs: np.ndarray, *,
                       n: int = 32, cols: int = 8, names=None):
    """The n most confident mistakes on the test set, each with true, predicted, confidence.

    Returns None when there are no mistakes.
    """
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    if len(wrong) == 0:
        return None
    confidence = probs[wrong, predicted[wrong]]
    chosen = wrong[np.argsort(-confidence, kind="stable")[:n]]
    if names is None:
        text = [f"true {labels[i]} → {predicted[i]}\n#{i} {_pct(probs[i, predicted[i]])}"
                for i in chosen]
    else:                                  # names are too wide for one line of a tile
        text = [f"{_label(labels[i], names, True)} →\n{_label(predicted[i], names, True)}"
                f"\n#{i} {_pct(probs[i, predicted[i]])}" for i in chosen]
    noun = _noun(names)
    return _tile_figure(_ink(images[chosen]), cols, labels=text,
                        label_lines=2 if names is None else 3, colors=[BAD] * len(chosen),
                        title=f"The {len(chosen)} most confident mistakes "
                              f"(of {len(wrong)} on {len(labels)} test images)",
                        caption=f"true {noun} → predicted {noun}; test-set index and the "
                                "probability given to the prediction")


def sample_indices(labels: np.ndarray, probs: np.ndarray, n: int = 12) -> np.ndarray:
    """A varied sample: the first test images, the least confident right answers, and
    mistakes spread over their range of confidence."""
    predicted, confidence = probs.argmax(axis=1), probs.max(axis=1)
    right, wrong = np.flatnonzero(predicted == labels), np.flatnonzero(predicted != labels)
    n_odd = min(n // 4, len(wrong))
    unsure = right[np.argsort(confidence[right], kind="stable")[:n // 4]]
    spread = wrong[np.argsort(confidence[wrong], kind="stable")]
    mistakes = spread[np.linspace(0, len(spread) - 1, n_odd).round().astype(int)] if n_odd else []
    chosen = [*unsure, *mistakes]
    first = [i for i in range(len(labels)) if i not in set(chosen)][:n - len(chosen)]
    return np.array([*first, *chosen], dtype=np.int64)


def _pct(p: float) -> str:
    """0.99996 -> '>99.9%' rather than a misleading '100%'."""
    return ">99.9%" if p >= 0.9995 else f"{p:.1%}"


def prediction_grid(images: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                    indices=None, *, cols: int = 6, names=None):
    """Test images, each above its ten class probabilities as bars (predicted bar coloured).

    The bars are labelled 0..9 whatever `names` says; the caption then lists the names.

    Everything is drawn in one axes whose data units are inches (y downwards): two dozen
    small axes with their ticks would take most of a report's time.
    """
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    indices = sample_indices(labels, probs) if indices is None else np.asarray(indices)
    rows = math.ceil(len(indices) / cols)
    k = probs.shape[1]
    cell_w, cell_h, top, side, bar_h = 1.75, 2.35, 0.6, 1.1, 0.55       # inches
    head = 0.0 if names is None else 0.16           # a second line above each image
    cell_h += head
    top += 0.0 if names is None else 0.17           # a second caption line
    width, height = cell_w * cols, cell_h * rows + top
    fig = _figure(width, height)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set(xlim=(0, width), ylim=(height, 0))
    ax.set_axis_off()
    bars, colors, lines = [], [], []
    slot_w = (cell_w - 0.35) / k                                       # one bar slot
    for slot, i in enumerate(indices):
        r, c = divmod(slot, cols)
        x0, y0 = c * cell_w, top + r * cell_h
        guess, truth = int(probs[i].argmax()), int(labels[i])
        color = GOOD if guess == truth else BAD
        left, img_top = x0 + (cell_w - side) / 2, y0 + 0.22 + head
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255, interpolation="nearest",
                  extent=(left, left + side, img_top + side, img_top))
        bars.append(Rectangle((left, img_top), side, side, fill=False))
        colors.append("none")
        heading = (f"#{i}: true {truth}, predicted {guess}" if names is None else
                   f"#{i}: true {names[truth]}\npredicted {names[guess]}")
        ax.text(x0 + cell_w / 2, img_top - 0.04, heading, ha="center", va="bottom",
                fontsize=8.5, color=color)
        base, bx = img_top + side + 0.2 + bar_h, x0 + 0.2
        lines += [[(bx, base), (bx + k * slot_w, base)],
                  [(bx, base - bar_h), (bx + k * slot_w, base - bar_h)]]
        for j in range(k):
            bar_color = color if j == guess else GOOD if j == truth else "#afb8c1"
            bars.append(Rectangle((bx + (j + 0.12) * slot_w, base - probs[i, j] * bar_h),
                                  0.76 * slot_w, probs[i, j] * bar_h))
            colors.append(bar_color)
            ax.text(bx + (j + 0.5) * slot_w, base + 0.03, str(j), ha="center", va="top",
                    fontsize=7)
        ax.text(bx + k * slot_w, base - bar_h - 0.03,
                f"P({_label(guess, names)}) {_pct(probs[i, guess])}",
                ha="right", va="bottom", fontsize=7.5, color=color)
    from matplotlib.collections import LineCollection
    ax.add_collection(LineCollection(lines, colors=["#57606a", "#d0d7de"] * len(indices),
                                     linewidths=[0.8, 0.6] * len(indices),
                                     linestyles=["-", ":"] * len(indices)))
    ax.add_collection(PatchCollection(bars, facecolors=colors,
                                      edgecolors=["black" if c == "none" else "none"
                                                  for c in colors], linewidths=0.8,
                                      match_original=False))
    ax.text(width / 2, 0.12, "Sample predictions and their ten probabilities (dotted line: 1)",
            ha="center", va="top", fontsize=12)
    caption = f"green: the true {_noun(names)}, red: a wrong prediction"
    if names is not None:
        caption += "\nbars: " + ", ".join(f"{j} {name}" for j, name in enumerate(names))
    ax.text(width / 2, 0.37, caption, ha="center", va="top", fontsize=9, color="#555555")
    return fig


def confidence_histogram(labels: np.ndarray, probs: np.ndarray, *, names=None):
    """Histogram of top-1 probability, right and wrong predictions separately (log counts)."""
    confidence = probs.max(axis=1)
    right = probs.argmax(axis=1) == labels
    fig = _figure(7.6, 4.4)
    ax = fig.subplots()
    low = np.floor(min(confidence.min(), 1.0 / probs.shape[1]) * 20) / 20
    bins = np.linspace(low, 1.0, int(round((1.0 - low) * 40)) + 1)
    for mask, color, name in ((right, GOOD, "right"), (~right, BAD, "wrong")):
        if mask.any():
            ax.hist(confidence[mask], bins=bins, color=color, alpha=0.55, label=(
                f"{name}: {mask.sum()} images, mean confidence {confidence[mask].mean():.1%}"),
                histtype="stepfilled", edgecolor=color)
    ax.set_yscale("log")
    _plain_log_axis(ax.yaxis)
    ax.set(xlabel=f"confidence (probability of the predicted {_noun(names)})",
           ylabel="test images (log scale)",
           title="How sure the network is, when right and when wrong")
    _percent_axis(ax.xaxis)
    ax.legend(frameon=False, loc="upper left")
    ax.grid(alpha=0.3)
    _margins(fig, left=0.8)
    return fig


def reliability_diagram(bins: list[dict], ece: float, *, names=None):
    """Accuracy against mean confidence per bin; below, how many images each bin holds."""
    fig = _figure(6.4, 6.2)
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
    _percent_axis(top.yaxis)
    top.legend(frameon=False, loc="upper left", fontsize=9)
    top.grid(alpha=0.3)
    bottom.bar(lower[filled], count[filled], width[filled], align="edge", color="#8c959f",
               edgecolor="white")
    bottom.set_yscale("log")
    _plain_log_axis(bottom.yaxis, minor=False)
    bottom.set(xlabel=f"confidence (probability of the predicted {_noun(names)})",
               ylabel="images\n(log scale)")
    _percent_axis(bottom.xaxis)
    bottom.grid(alpha=0.3)
    _margins(fig, left=0.95, hspace=0.12)
    return fig


def per_class_accuracy_bars(per_class: list[dict], overall: float, *, names=None):
    """Recall (accuracy) per class, labelled, with the overall accuracy as a dashed line."""
    from matplotlib.ticker import MultipleLocator, PercentFormatter

    noun = _noun(names)
    fig = _figure(7.6, 4.2 if names is None else 4.4)
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
    _margins(fig, left=0.85, bottom=0.6 if names is None else 0.8)
    return fig


def first_layer_weights(model, n: int = 64, cols: int = 8):
    """The first layer's weights as images: a Dense layer's columns reshaped to the input
    image (square inputs only), or a Conv2D's first-channel kernels. None otherwise."""
    first = next((layer for layer in model.layers if layer.parameters()), None)
    kind = type(first).__name__
    if kind == "Dense":
        side = math.isqrt(first.n_in)
        if side * side != first.n_in:
            return None
        maps = first.W.data[:, :n].T.reshape(-1, side, side)          # (n, 28, 28)
        what = f"{len(maps)} of the {first.n_out} hidden units of the first Dense layer"
        inches = 0.8
    elif kind == "Conv2D" and first.W.data.ndim == 4:
        maps = first.W.data[:n, 0]                                    # (C_out, kh, kw)
        what = f"{len(maps)} kernels of the first Conv2D (input channel 0)"
        inches, cols = 0.6, min(cols, 8)
    else:
        return None
    return _tile_figure(_colored(maps, "RdBu_r", symmetric=True), cols, tile_inches=inches,
                        title=f"First-layer weights: {what}",
                        caption="red: ink there raises the unit, blue: lowers it\n(each image "
                                "scaled to its own largest weight)")


def saliency_figure(images: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                    gradients: np.ndarray, targets: np.ndarray, *, names=None):
    """Per image: the input, |gradient| of the target class score, and the signed gradient."""
    n = len(images)
    tiles = np.concatenate([_ink(images), _colored(np.abs(gradients), "inferno", False),
                            _colored(gradients, "RdBu_r", True)])
    predicted = probs.argmax(axis=1)
    if names is None:
        text = [f"true {labels[i]} → {predicted[i]}\n{_pct(probs[i].max())}"
                + (f", grad of {targets[i]}" if targets[i] != predicted[i] else "")
                for i in range(n)]
    else:                                  # names are too wide for one line of a tile
        text = [f"{_label(labels[i], names, True)} →\n{_label(predicted[i], names, True)}"
                f"\n{_pct(probs[i].max())}"
                + (f"\ngrad of {_label(targets[i], names, True)}"
                   if targets[i] != predicted[i] else "") for i in range(n)]
    colors = [GOOD if probs[i].argmax() == labels[i] else BAD for i in range(n)]
    return _tile_figure(tiles, n, labels=text + [""] * (2 * n), colors=colors + [None] * (2 * n),
                        label_lines=max(t.count("\n") + 1 for t in text), tile_inches=0.95,
                        row_labels=["input", "|gradient|", "gradient"],
                        title=f"Saliency: which pixels move the predicted {_noun(names)}'s score",
                        caption="d score / d pixel by backpropagation; red raises the score, "
                                "blue lowers it")


def compare_curves(histories: dict[str, list[dict]]):
    """Loss and accuracy of several runs on shared axes: validation solid, train dashed."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig = _figure(12.0, 4.6)
    loss_ax, acc_ax = fig.subplots(1, 2)
    colors = _cmap("tab10").colors
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
    _plain_log_axis(loss_ax.yaxis)
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    _percent_axis(acc_ax.yaxis)
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles += [Line2D([], [], color="#57606a", ls="-", lw=1.8, label="validation"),
                Line2D([], [], color="#57606a", ls="--", lw=1.0, label="train")]
    ncol = min(6, len(handles))
    rows = math.ceil(len(handles) / ncol)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, frameon=False, fontsize=9)
    fig.suptitle("Runs compared", fontsize=12)
    _margins(fig, top=0.65, bottom=0.65 + 0.22 * rows, wspace=0.25)
    return fig
