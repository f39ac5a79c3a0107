"""Accuracy on handwriting that is not MNIST's: digits rendered from handwriting fonts.

`python -m benchmarks.handwriting MODEL [MODEL ...]` renders every digit in every handwriting
font Debian packages that is installed here (fonts-bwht, fonts-breip, fonts-dkg-handwriting,
fonts-femkeklaver, fonts-humor-sans, fonts-comic-neue, fonts-dancingscript, fonts-kaushanscript,
fonts-klee, fonts-kristi), varied per image in size, position, stroke width and rotation, as
dark ink on a light page. Each picture then goes through `barenet predict`'s own path
(`preprocess_image`: polarity, crop, 20x20 box, centre of mass), so the figure is what a user
drawing or photographing digits would see. Seeded: the same set every run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

FONT_DIRS = ("/usr/share/fonts/opentype/bwht", "/usr/share/fonts/truetype/breip",
             "/usr/share/fonts/truetype/fifthhorseman", "/usr/share/fonts/truetype/femkeklaver",
             "/usr/share/fonts/truetype/humor-sans", "/usr/share/fonts/opentype/comic-neue",
             "/usr/share/fonts/opentype/dancingscript", "/usr/share/fonts/opentype/kaushanscript",
             "/usr/share/fonts/truetype/klee", "/usr/share/fonts/truetype/kristi")
CANVAS = 96


def fonts() -> list[Path]:
    return sorted(p for d in FONT_DIRS if Path(d).is_dir()
                  for p in Path(d).iterdir() if p.suffix.lower() in (".ttf", ".otf"))


def render(digit: int, font_path: Path, rng: np.random.Generator) -> np.ndarray:
    """One digit as a CANVAS x CANVAS gray picture (uint8, dark ink on a light page)."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    size = int(rng.integers(36, 72))
    font = ImageFont.truetype(str(font_path), size)
    page = Image.new("L", (CANVAS, CANVAS), 255)
    draw = ImageDraw.Draw(page)
    left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=font)
    x = (CANVAS - (right - left)) / 2 - left + rng.uniform(-10, 10)
    y = (CANVAS - (bottom - top)) / 2 - top + rng.uniform(-10, 10)
    draw.text((x, y), str(digit), fill=int(rng.integers(0, 60)), font=font)
    stroke = int(rng.integers(-1, 3))               # thinner, as drawn, or bolder
    if stroke > 0:
        page = page.filter(ImageFilter.MinFilter(2 * stroke + 1))     # dark ink grows
    elif stroke < 0:
        page = page.filter(ImageFilter.MaxFilter(3))
    page = page.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR, fillcolor=255)
    return np.asarray(page, dtype=np.uint8)


def build_set(per_font: int = 3, seed: int = 0):
    """(images uint8 (N, 28, 28), labels (N,), font names (N,)) after predict's preprocessing."""
    from barenet.data.preprocess import ImageError, preprocess_image

    rng = np.random.default_rng(seed)
    images, labels, names = [], [], []
    for font_path in fonts():
        for digit in range(10):
            for _ in range(per_font):
                picture = render(digit, font_path, rng)
                try:
                    images.append(preprocess_image(picture))
                except ImageError:                  # a glyph the font lacks: nothing drawn
                    continue
                labels.append(digit)
                names.append(font_path.stem)
    if not images:
        raise SystemExit("no handwriting fonts found: apt-get install fonts-bwht fonts-breip "
                         "fonts-dkg-handwriting fonts-femkeklaver fonts-humor-sans "
                         "fonts-comic-neue fonts-dancingscript fonts-kaushanscript "
                         "fonts-klee fonts-kristi")
    return np.stack(images), np.array(labels), np.array(names)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.handwriting", description=__doc__)
    p.add_argument("models", nargs="+", help="run directories, model files or shipped names")
    p.add_argument("--per-font", type=int, default=10, help="images per digit per font")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--png", type=Path, default=None, help="write a picture of 100 of them")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    from barenet.app.runs import resolve_model_path
    from barenet.serialize import load_model

    x, y, names = build_set(args.per_font, args.seed)
    print(f"{len(x)} digits from {len(set(names))} fonts ({args.per_font} per digit per font)")
    results = {}
    for model in args.models:
        net, _ = load_model(resolve_model_path(model))
        predicted = net.predict(x)
        accuracy = float(np.mean(predicted == y))
        results[model] = accuracy
        worst = sorted({n: float(np.mean(predicted[names == n] == y[names == n]))
                        for n in set(names)}.items(), key=lambda kv: kv[1])[:3]
        print(f"{model}: {accuracy:.4f}  (weakest fonts: "
              + ", ".join(f"{n} {a:.2f}" for n, a in worst) + ")")
    if args.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        pick = np.random.default_rng(1).choice(len(x), size=min(100, len(x)), replace=False)
        fig, axes = plt.subplots(10, 10, figsize=(8, 8.4))
        for ax, i in zip(axes.ravel(), pick):
            ax.imshow(x[i], cmap="gray")
            ax.set_title(f"{y[i]}", fontsize=7)
            ax.axis("off")
        fig.suptitle("handwriting-font digits after barenet's preprocessing (true label)")
        fig.tight_layout()
        fig.savefig(args.png, dpi=90)
    if args.json:
        args.json.write_text(json.dumps({"n": len(x), "fonts": sorted(set(names)),
                                         "per_font": args.per_font, "seed": args.seed,
                                         "accuracy": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
