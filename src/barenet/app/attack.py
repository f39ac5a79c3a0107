"""`barenet attack MODEL --index I [--eps E]`: an adversarial digit, as a picture.

The original test image, the perturbation (amplified to be seen), the adversarial digit and
the model's answer and confidence for both, for FGSM and PGD (adversarial.py). Without --eps,
the smallest FGSM eps that changes the answer is searched and used.
"""

from __future__ import annotations

import click
import numpy as np

from .common import Failure, FiniteRange, check_out_file, load_model_arg, test_set


def figure(rows: list[dict], title: str, names=None):
    """One row per attack: original | perturbation x amplification | adversarial digit."""
    from .figures import new_figure

    fig = new_figure(7.2, 2.5 * len(rows) + 0.5)
    fig.suptitle(title, fontsize=10)
    label = (lambda k: str(k)) if names is None else (lambda k: names[k])
    for r, row in enumerate(rows):
        delta = row["adversarial"] - row["original"]
        scale = float(np.abs(delta).max()) or 1.0
        panels = [(row["original"], "gray_r", 0, 1,
                   f"original: {label(row['before'])} ({row['p_before']:.0%})"),
                  (delta / scale, "RdBu_r", -1, 1,
                   f"{row['method']} change, ε = {row['eps']:g}\n(shown ×{1 / scale:.0f})"),
                  (row["adversarial"], "gray_r", 0, 1,
                   f"adversarial: {label(row['after'])} ({row['p_after']:.0%})")]
        for c, (image, cmap, low, high, text) in enumerate(panels):
            ax = fig.add_subplot(len(rows), 3, 3 * r + c + 1)
            ax.imshow(image, cmap=cmap, vmin=low, vmax=high)
            ax.set_title(text, fontsize=8,
                         color="#cf222e" if c == 2 and row["after"] != row["before"] else "k")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.03, top=1 - 0.75 / fig.get_figheight(),
                        hspace=0.45, wspace=0.1)
    return fig


def attack_rows(net, image: np.ndarray, label: int, eps: float, steps: int) -> list[dict]:
    """FGSM and PGD at eps on one image: the pictures and both answers for each."""
    from .. import adversarial
    from ..model import as_input
    original = as_input(image)
    p_original = net.predict_proba(original[None])[0]
    rows = []
    for method, adv in (("FGSM", adversarial.fgsm(net, original[None], [label], eps)),
                        (f"PGD ({steps} steps)",
                         adversarial.pgd(net, original[None], [label], eps, steps))):
        p = net.predict_proba(adv)[0]
        rows.append({"method": method, "eps": eps, "original": original, "adversarial": adv[0],
                     "before": int(p_original.argmax()), "p_before": float(p_original.max()),
                     "after": int(p.argmax()), "p_after": float(p.max())})
    return rows


@click.command("attack")
@click.argument("model", required=False)
@click.option("--index", type=click.IntRange(0, None), default=0, show_default=True,
              help="Test image to attack.")
@click.option("--eps", type=FiniteRange(0.0, 1.0), default=None,
              help="Largest change per pixel (pixel range 0-1) [default: the smallest FGSM "
                   "eps that flips the answer].")
@click.option("--steps", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="PGD steps.")
@click.option("--out", type=click.Path(dir_okay=False), default="attack.png",
              show_default=True, help="The picture.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="MNIST cache directory.")
def command(model, index, eps, steps, out, data_dir):
    """Change a test digit imperceptibly so MODEL answers wrongly (FGSM and PGD, gradients
    from barenet's own backward pass); MODEL left out: the default shipped model."""
    from pathlib import Path

    from .. import data
    from ..adversarial import smallest_flip
    from ..modelfile import atomic_write_bytes
    from .figures import png_bytes

    out = check_out_file(out)
    net, meta = load_model_arg(model)
    from ..adversarial import NoGradient, check_gradient
    try:
        check_gradient(net)
    except NoGradient as exc:
        raise Failure(str(exc)) from None
    dataset, x_test, y_test = test_set(meta, data_dir)
    if index >= len(x_test):
        raise Failure(f"--index {index}: the test set has images 0-{len(x_test) - 1}")
    image, label = x_test[index], int(y_test[index])
    if eps is None:
        found = smallest_flip(net, image)
        if found is None:
            raise Failure(f"no FGSM eps up to 0.5 changes the answer for test image {index}; "
                          f"give --eps to draw one anyway", 1)
        eps = found[0]
        click.echo(f"smallest FGSM eps that changes the answer: {eps:g}")
    rows = attack_rows(net, image, label, eps, steps)
    names = data.class_names(dataset)
    for row in rows:
        name = (lambda k: str(k)) if names is None else (lambda k: names[k])
        click.echo(f"{row['method']:>16}  eps {eps:g}:  {name(row['before'])} "
                   f"({row['p_before']:.1%}) -> {name(row['after'])} ({row['p_after']:.1%})"
                   f"{'' if row['after'] != row['before'] else '  (answer kept)'}")
    title = f"test image {index} (true {names[label] if names else label}), " \
            f"{Path(model or 'cnn').name}"
    atomic_write_bytes(out, png_bytes(figure(rows, title, names)))
    click.echo(f"wrote {out}")
    return 0
