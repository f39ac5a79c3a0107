"""Pictures of digits: grids of test images (mistakes, sample predictions with their
probabilities), first-layer weights and saliency maps.

Grids are drawn as one mosaic image with text on top rather than one axes per image, which
keeps a report to a few seconds. matplotlib is imported inside the functions (figures.py).
"""

from __future__ import annotations

import math

import numpy as np

from .figures import BAD, GOOD, class_label, colormap, label_noun, new_figure, pct


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
    return colormap(cmap)(scaled)[..., :3]


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
    fig = new_figure(width, height)
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
        text = [f"true {labels[i]} → {predicted[i]}\n#{i} {pct(probs[i, predicted[i]])}"
                for i in chosen]
    else:                                  # names are too wide for one line of a tile
        text = [f"{class_label(labels[i], names, True)} →\n{class_label(predicted[i], names, True)}"
                f"\n#{i} {pct(probs[i, predicted[i]])}" for i in chosen]
    noun = label_noun(names)
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




# prediction_grid's cell, in inches: its size, the space above the first row, the image's
# side and the height of a bar of probability 1.
_CELL_W, _CELL_H, _TOP, _SIDE, _BAR_H = 1.75, 2.35, 0.6, 1.1, 0.55


def prediction_grid(images: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                    indices=None, *, cols: int = 6, names=None):
    """Test images, each above its ten class probabilities as bars (predicted bar coloured).

    The bars are labelled 0..9 whatever `names` says; the caption then lists the names.

    Everything is drawn in one axes whose data units are inches (y downwards): two dozen
    small axes with their ticks would take most of a report's time.
    """
    from matplotlib.collections import LineCollection, PatchCollection

    indices = sample_indices(labels, probs) if indices is None else np.asarray(indices)
    rows = math.ceil(len(indices) / cols)
    head = 0.0 if names is None else 0.16           # a second line above each image
    cell_h = _CELL_H + head
    top = _TOP + (0.0 if names is None else 0.17)   # a second caption line
    width, height = _CELL_W * cols, cell_h * rows + top
    fig = new_figure(width, height)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set(xlim=(0, width), ylim=(height, 0))
    ax.set_axis_off()
    bars, colors, lines = [], [], []
    for slot, i in enumerate(indices):
        r, c = divmod(slot, cols)
        cell = _prediction_cell(ax, images[i], int(labels[i]), probs[i], i,
                                c * _CELL_W, top + r * cell_h, head, names)
        bars += cell[0]
        colors += cell[1]
        lines += cell[2]
    ax.add_collection(LineCollection(lines, colors=["#57606a", "#d0d7de"] * len(indices),
                                     linewidths=[0.8, 0.6] * len(indices),
                                     linestyles=["-", ":"] * len(indices)))
    ax.add_collection(PatchCollection(bars, facecolors=colors,
                                      edgecolors=["black" if c == "none" else "none"
                                                  for c in colors], linewidths=0.8,
                                      match_original=False))
    ax.text(width / 2, 0.12, "Sample predictions and their ten probabilities (dotted line: 1)",
            ha="center", va="top", fontsize=12)
    caption = f"green: the true {label_noun(names)}, red: a wrong prediction"
    if names is not None:
        caption += "\nbars: " + ", ".join(f"{j} {name}" for j, name in enumerate(names))
    ax.text(width / 2, 0.37, caption, ha="center", va="top", fontsize=9, color="#555555")
    return fig


def _prediction_cell(ax, image: np.ndarray, truth: int, p: np.ndarray, index: int,
                     x0: float, y0: float, head: float, names):
    """One cell of prediction_grid, its top left corner at (x0, y0): the image (H, W) under
    its heading, then the bars of the probabilities p (k,). Draws the image and the texts;
    returns the frame and bars (Rectangles), their face colours and the lines at 0 and 1,
    which prediction_grid draws for all cells at once."""
    from matplotlib.patches import Rectangle

    k = len(p)
    slot_w = (_CELL_W - 0.35) / k                                     # one bar slot
    guess = int(p.argmax())
    color = GOOD if guess == truth else BAD
    left, img_top = x0 + (_CELL_W - _SIDE) / 2, y0 + 0.22 + head
    ax.imshow(image, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest",
              extent=(left, left + _SIDE, img_top + _SIDE, img_top))
    bars, colors = [Rectangle((left, img_top), _SIDE, _SIDE, fill=False)], ["none"]
    heading = (f"#{index}: true {truth}, predicted {guess}" if names is None else
               f"#{index}: true {names[truth]}\npredicted {names[guess]}")
    ax.text(x0 + _CELL_W / 2, img_top - 0.04, heading, ha="center", va="bottom",
            fontsize=8.5, color=color)
    base, bx = img_top + _SIDE + 0.2 + _BAR_H, x0 + 0.2
    lines = [[(bx, base), (bx + k * slot_w, base)],
             [(bx, base - _BAR_H), (bx + k * slot_w, base - _BAR_H)]]
    for j in range(k):
        bars.append(Rectangle((bx + (j + 0.12) * slot_w, base - p[j] * _BAR_H),
                              0.76 * slot_w, p[j] * _BAR_H))
        colors.append(color if j == guess else GOOD if j == truth else "#afb8c1")
        ax.text(bx + (j + 0.5) * slot_w, base + 0.03, str(j), ha="center", va="top",
                fontsize=7)
    ax.text(bx + k * slot_w, base - _BAR_H - 0.03,
            f"P({class_label(guess, names)}) {pct(p[guess])}",
            ha="right", va="bottom", fontsize=7.5, color=color)
    return bars, colors, lines


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
        text = [f"true {labels[i]} → {predicted[i]}\n{pct(probs[i].max())}"
                + (f", grad of {targets[i]}" if targets[i] != predicted[i] else "")
                for i in range(n)]
    else:                                  # names are too wide for one line of a tile
        text = [f"{class_label(labels[i], names, True)} →\n{class_label(predicted[i], names, True)}"
                f"\n{pct(probs[i].max())}"
                + (f"\ngrad of {class_label(targets[i], names, True)}"
                   if targets[i] != predicted[i] else "") for i in range(n)]
    colors = [GOOD if probs[i].argmax() == labels[i] else BAD for i in range(n)]
    return _tile_figure(tiles, n, labels=text + [""] * (2 * n), colors=colors + [None] * (2 * n),
                        label_lines=max(t.count("\n") + 1 for t in text), tile_inches=0.95,
                        row_labels=["input", "|gradient|", "gradient"],
                        title="Saliency: which pixels move the predicted "
                              f"{label_noun(names)}'s score",
                        caption="d score / d pixel by backpropagation; red raises the score, "
                                "blue lowers it")
