"""How often a model answers a scribble that is no digit, against how many real test digits it
keeps, for a range of reject thresholds: `python -m benchmarks.scribbles [MODEL ...]`.

Scribbles are random pen walks drawn on a 280x280 canvas like the web page's (18 px pen,
80-300 steps of a smoothed random walk), then preprocessed exactly as the page's drawings.
Seeded: the same command prints the same table. The reject default (metrics.DEFAULT_REJECT)
was chosen from this table.
"""

from __future__ import annotations

import argparse

import numpy as np

THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)


def scribble(rng: np.random.Generator, side: int = 280, pen: int = 18) -> np.ndarray:
    """A uint8 (side, side) canvas: black pen walk on white."""
    canvas = np.full((side, side), 255, np.uint8)
    position = rng.uniform(60, side - 60, 2)
    velocity = rng.normal(0, 6, 2)
    for _ in range(rng.integers(80, 300)):
        velocity = 0.85 * velocity + rng.normal(0, 4, 2)
        position = np.clip(position + velocity, 20, side - 20)
        r, c = position.astype(int)
        canvas[r - pen // 2:r + pen // 2, c - pen // 2:c + pen // 2] = 0
    return canvas


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["mlp", "cnn"])
    parser.add_argument("--scribbles", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from barenet.app.common import load_model_arg
    from barenet.data import load_dataset
    from barenet.data.preprocess import ImageError, preprocess_image

    rng = np.random.default_rng(args.seed)
    drawn = []
    for _ in range(args.scribbles):
        try:
            drawn.append(preprocess_image(scribble(rng)))
        except ImageError:
            pass
    scribbles = np.stack(drawn)
    _, (x_test, y_test) = load_dataset("mnist")
    print(f"{len(scribbles)} scribbles, {len(x_test)} MNIST test digits, seed {args.seed}")
    print(f"{'model':>8} {'t':>5} {'digits answered':>16} {'accuracy on them':>17} "
          f"{'scribbles answered':>19}")
    for name in args.models:
        model, _ = load_model_arg(name)
        digits = model.predict_proba(x_test)
        right = digits.argmax(axis=1) == y_test
        top_scribble = model.predict_proba(scribbles).max(axis=1)
        for t in THRESHOLDS:
            kept = digits.max(axis=1) >= t
            print(f"{name:>8} {t:>5g} {kept.mean():>16.1%} {right[kept].mean():>17.2%} "
                  f"{(top_scribble >= t).mean():>19.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
