"""How often a model answers a scribble that is no digit, against how many real test digits it
keeps, for a range of reject thresholds: `python -m benchmarks.scribbles [MODEL ...]`.

Scribbles are random pen walks drawn on a 280x280 canvas like the web page's (18 px pen,
80-300 steps of a smoothed random walk), then preprocessed exactly as the page's drawings.
Seeded: the same command prints the same table. The reject default (metrics.DEFAULT_REJECT)
was chosen from this table. "+ space" columns add the input-space check (barenet.inputspace,
stored in the model file): "not sure" also when an image is far from the training digits'
subspace. With --handwriting, the digits of benchmarks/handwriting.py (needs the fonts) are
counted too: real digits in other hands, which the check should keep.
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
    parser.add_argument("--handwriting", action="store_true",
                        help="also count the handwriting-font digits answered")
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
    hand = None
    if args.handwriting:
        from benchmarks.handwriting import build_set
        hand = build_set()[0]
        print(f"{len(hand)} handwriting-font digits")
    print(f"{'':>14} {'digits answered':>16} {'accuracy on them':>17} "
          f"{'scribbles answered':>19}" + (f" {'fonts answered':>15}" if hand is not None else ""))
    for name in args.models:
        model, _ = load_model_arg(name)
        digits = model.predict_proba(x_test)
        right = digits.argmax(axis=1) == y_test
        top_scribble = model.predict_proba(scribbles).max(axis=1)
        space = model.input_space
        checks = [("", None, None, None)]
        if space is not None:
            checks.append(("+ space", space.typical(x_test), space.typical(scribbles),
                           None if hand is None else space.typical(hand)))
        top_hand = None if hand is None else model.predict_proba(hand).max(axis=1)
        for t in THRESHOLDS:
            for label, typical, typical_scribble, typical_hand in checks:
                kept = digits.max(axis=1) >= t
                answered = top_scribble >= t
                if typical is not None:
                    kept, answered = kept & typical, answered & typical_scribble
                row = (f"{name:>5} {t:>4g} {label:>7} {kept.mean():>10.1%} "
                       f"{right[kept].mean():>17.2%} {answered.mean():>19.1%}")
                if hand is not None:
                    fonts = top_hand >= t
                    if typical_hand is not None:
                        fonts &= typical_hand
                    row += f" {fonts.mean():>15.1%}"
                print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
