"""What every plot shares: a matplotlib Figure without pyplot (no global state, no GUI),
rendered to PNG with Agg; the colours, fixed margins, axis formats and how a class is named.

Functions that name classes take `names`, the class names of the data set (Fashion-MNIST);
None means the labels are digits, written as themselves.
"""

from __future__ import annotations

import io
from pathlib import Path

DPI = 120
GOOD, BAD = "#1a7f37", "#cf222e"            # green for right, red for wrong
TRAIN, VAL = "#0969da", "#d1242f"


def new_figure(width: float, height: float):
    """A Figure of width x height inches, not registered with pyplot."""
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


def colormap(name: str):
    import matplotlib
    return matplotlib.colormaps[name]


def label_noun(names) -> str:
    """What a label is called in titles and axis labels."""
    return "digit" if names is None else "class"


def class_label(k, names, short: bool = False) -> str:
    """Label k as written: the digit itself, or its class name ("T-shirt" when short)."""
    if names is None:
        return str(k)
    return names[k].split("/")[0] if short else names[k]


def pct(p: float) -> str:
    """0.99996 -> '>99.9%' rather than a misleading '100%'."""
    return ">99.9%" if p >= 0.9995 else f"{p:.1%}"


def margins(fig, left=0.75, right=0.2, bottom=0.6, top=0.45, wspace=None, hspace=None):
    """Fixed margins in inches: cheaper than tight_layout, which draws the figure twice."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=wspace, hspace=hspace)


def plain_log_axis(axis, minor: bool = True) -> None:
    """Tick labels like 0.05 instead of 5 x 10^-2 (and no slow mathtext)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.1e}"[0] in "25" else "")
                             if minor else NullFormatter())


def percent_axis(axis) -> None:
    from matplotlib.ticker import PercentFormatter
    axis.set_major_formatter(PercentFormatter(1.0, decimals=None))
