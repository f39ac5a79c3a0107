"""`barenet augment-preview`: a PNG grid of training digits next to augmented copies of them."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("augment-preview")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML run configuration whose [augment] section is shown.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set augment.rotate=15 (repeatable).")
@click.option("--out", type=click.Path(dir_okay=False), default="augment-preview.png",
              show_default=True, help="PNG file to write.")
@click.option("--digits", type=click.IntRange(1, 50), default=8, show_default=True,
              help="Rows: training images shown.")
@click.option("--copies", type=click.IntRange(1, 20), default=8, show_default=True,
              help="Augmented copies per image.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed for the choice of images and the augmentation.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="MNIST cache directory.")
def command(config_file, overrides, out, digits, copies, seed, data_dir):
    """Write a grid: each row one training image, then augmented copies of it."""
    import numpy as np

    from ..config import load_config
    from ..data import load_dataset
    from ..data.augment import Augmenter
    from .common import Failure
    from .extras import require

    require("plots", "augment-preview")
    config = load_config(config_file, list(overrides))
    if not config.augment.enabled:
        raise Failure("the config has augmentation off (all of augment.shift, rotate, scale, "
                      "elastic_alpha, flip, erase are 0); set some, e.g. --set augment.rotate=15")
    (x_train, _), _ = load_dataset(config.data.dataset, data_dir)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(x_train), size=digits, replace=False)
    originals = x_train[chosen].astype(np.float32) * (1.0 / 255.0)          # (D, 28, 28)
    batch = np.repeat(originals, copies, axis=0)                           # (D * copies, ...)
    augmented = Augmenter(config.augment)(batch, rng).reshape(digits, copies, *batch.shape[1:])
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    _plot(originals, augmented, config, path)
    click.echo(f"saved {path} ({digits} images x {copies} augmented copies)")
    return 0


def _plot(originals, augmented, config, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    digits, copies = augmented.shape[:2]
    fig, axes = plt.subplots(digits, copies + 1, figsize=(0.9 * (copies + 1), 0.9 * digits + 0.6),
                             squeeze=False)
    for row in range(digits):
        images = [originals[row], *augmented[row]]
        for col, image in enumerate(images):
            ax = axes[row, col]
            ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                for spine in ax.spines.values():
                    spine.set_edgecolor("tab:orange")
                    spine.set_linewidth(2)
    axes[0, 0].set_title("original", fontsize=8)
    a = config.augment
    fig.suptitle(f"{config.data.dataset}: shift {a.shift:g} px, rotate {a.rotate:g} deg, "
                 f"scale {a.scale:g}, elastic alpha {a.elastic_alpha:g} sigma {a.elastic_sigma:g}"
                 + (f", mirrored with p {a.flip:g}" if a.flip else "")
                 + (f", erased with p {a.erase:g} (up to {a.erase_area:g})" if a.erase else ""),
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)
