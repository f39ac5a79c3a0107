"""`barenet explore MODEL`: browse the test set in the terminal, one image and its probabilities.

Images are drawn with Unicode upper half blocks (one character = two pixels, foreground on top,
background below), so they work in any terminal with colours: tmux, SSH, the Linux console.
Rendering is plain functions returning rich Text; the textual app only keeps the position.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from rich.style import Style
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Header, Input, Static

from ..metrics import answered
from .common import reject_option

_EIGHTHS = " ▏▎▍▌▋▊▉█"  # partial blocks for bars with 1/8-character resolution


def image_text(image: np.ndarray, scale: int = 1) -> Text:
    """uint8 (H, W) -> Text of H*scale/2 lines, W*scale columns of '▀' (top fg, bottom bg)."""
    a = np.asarray(image, dtype=np.uint8)
    if scale > 1:
        a = a.repeat(scale, axis=0).repeat(scale, axis=1)
    if a.shape[0] % 2:
        a = np.vstack([a, np.zeros((1, a.shape[1]), np.uint8)])
    styles: dict[tuple[int, int], Style] = {}  # at most 256 * 256, usually far fewer
    text = Text(no_wrap=True, overflow="crop")
    for r in range(0, a.shape[0], 2):
        for top, bottom in zip(a[r].tolist(), a[r + 1].tolist()):
            style = styles.get((top, bottom))
            if style is None:
                style = styles[top, bottom] = Style(color=f"rgb({top},{top},{top})",
                                                    bgcolor=f"rgb({bottom},{bottom},{bottom})")
            text.append("▀", style)
        if r + 2 < a.shape[0]:
            text.append("\n")
    return text


def bar(fraction: float, width: int) -> str:
    """A horizontal bar of `width` characters filled to `fraction` in eighths of a character."""
    eighths = int(round(max(0.0, min(1.0, fraction)) * width * 8))
    full, part = divmod(eighths, 8)
    return ("█" * full + (_EIGHTHS[part] if part else "")).ljust(width)


def bars_text(probs: np.ndarray, truth: int | None = None, names=None, width: int = 30) -> Text:
    """One line per class: name, bar, percentage; the top class bold, green when right."""
    predicted = int(np.argmax(probs))
    label_width = max(len(str(n)) for n in names) if names else 1
    text = Text(no_wrap=True, overflow="crop")
    for k, p in enumerate(probs):
        p = float(p)
        name = str(names[k]) if names else str(k)
        if k == predicted:
            style = "bold green" if truth is None or truth == predicted else "bold red"
        else:
            style = "yellow" if k == truth else ""
        text.append(f"{name:>{label_width}} ", style or None)
        text.append(bar(p, width), style or "grey50")
        text.append(f" {p:7.2%}", style or None)
        if k == truth:
            text.append("  ← true", "yellow" if k != predicted else "green")
        if k < len(probs) - 1:
            text.append("\n")
    return text


class Browser:
    """Position in the test set under a filter (true class, misclassified only)."""

    def __init__(self, labels: np.ndarray, predicted: np.ndarray, rng=None):
        self.labels = np.asarray(labels).astype(np.int64)
        self.predicted = np.asarray(predicted).astype(np.int64)
        self.digit: int | None = None
        self.misclassified = False
        self.indices = np.arange(len(self.labels))
        self.pos = 0
        self.rng = np.random.default_rng(rng)

    @property
    def index(self) -> int:
        return int(self.indices[self.pos])

    def describe(self) -> str:
        parts = [f"class {self.digit}" if self.digit is not None else "all classes"]
        if self.misclassified:
            parts.append("misclassified only")
        return ", ".join(parts)

    def set_filter(self, digit: int | None, misclassified: bool) -> bool:
        """Apply a filter; keeps the current image when it passes. False (unchanged) if empty."""
        keep = np.ones(len(self.labels), dtype=bool)
        if digit is not None:
            keep &= self.labels == digit
        if misclassified:
            keep &= self.labels != self.predicted
        indices = np.flatnonzero(keep)
        if indices.size == 0:
            return False
        current = self.index
        self.digit, self.misclassified, self.indices = digit, misclassified, indices
        self.pos = int(min(np.searchsorted(indices, current), indices.size - 1))
        return True

    def step(self, delta: int) -> None:
        self.pos = (self.pos + delta) % len(self.indices)

    def random(self) -> None:
        self.pos = int(self.rng.integers(len(self.indices)))

    def go_to(self, index: int) -> bool:
        """Show test image `index`; drops the filter when the image does not pass it."""
        if not 0 <= index < len(self.labels):
            raise IndexError(index)
        where = np.flatnonzero(self.indices == index)
        if where.size == 0:
            self.set_filter(None, False)
            where = np.flatnonzero(self.indices == index)
            self.pos = int(where[0])
            return False
        self.pos = int(where[0])
        return True


class ExploreApp(App):
    """Browse test images: the image in half blocks beside the 10 class probabilities."""

    TITLE = "barenet explore"
    AUTO_FOCUS = None  # keys go to the app; the index box takes focus only when opened
    CSS = """
    #status { height: auto; padding: 0 1; }
    #main { height: auto; padding: 1 1; }
    #image { width: auto; height: auto; border: round $primary; }
    #bars { width: 1fr; height: auto; padding: 0 2; }
    #goto { dock: bottom; display: none; }
    #goto.visible { display: block; }
    """
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("right,n,l,space", "step(1)", "next"),
        Binding("left,p,h", "step(-1)", "previous"),
        *[Binding(str(k), f"digit({k})", "class", show=k == 0, key_display="0-9")
          for k in range(10)],
        Binding("a", "all_classes", "all"),
        Binding("m", "toggle_misclassified", "misclassified"),
        Binding("r", "random", "random"),
        Binding("g", "go_to", "go to"),
        Binding("z", "zoom", "zoom"),
        Binding("q", "quit", "quit"),
        Binding("escape", "escape", "quit", show=False),
    ]

    def __init__(self, images: np.ndarray, labels: np.ndarray, probs: np.ndarray, *,
                 title: str = "", names=None, start: int = 0, rng=None, reject: float = 0.0,
                 typical: np.ndarray | None = None):
        super().__init__()
        self.images, self.probs, self.names = images, probs, names
        self.reject = reject                # below this top probability: "not sure"
        self.typical = typical              # False: looks like no training digit (with reject)
        self.browser = Browser(labels, probs.argmax(axis=1), rng=rng)
        self.browser.go_to(start)
        self.scale = 1
        if title:
            self.sub_title = title

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="status")
        with Horizontal(id="main"):
            yield Static(id="image")
            yield Static(id="bars")
        yield Input(placeholder=f"test image index 0-{len(self.images) - 1}, Enter to go",
                    id="goto", type="integer")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_view()

    def refresh_view(self) -> None:
        b = self.browser
        i = b.index
        truth, probs = int(b.labels[i]), self.probs[i]
        predicted = int(probs.argmax())
        name = (lambda k: f"{k} {self.names[k]}") if self.names else str
        verdict = Text("right", "bold green") if predicted == truth else Text("wrong", "bold red")
        typical = None if self.typical is None else self.typical[i]
        if probs[predicted] < self.reject:
            verdict = Text(f"not sure (below {self.reject:.0%})", "bold yellow")
        elif not answered(probs[predicted], self.reject, typical):
            verdict = Text("not sure (looks like no training digit)", "bold yellow")
        status = Text.assemble(
            ("test image ", ""), (f"{i}", "bold"), f" of {len(b.labels)}   true ",
            (name(truth), "bold"), "   predicted ", (name(predicted), "bold"),
            f" ({probs[predicted]:.1%}) ", verdict,
            f"\nshowing {b.describe()}: {b.pos + 1} of {len(b.indices)}", style=None)
        self.query_one("#status", Static).update(status)
        self.query_one("#image", Static).update(image_text(self.images[i], self.scale))
        self.query_one("#bars", Static).update(bars_text(probs, truth, self.names))

    # Actions (textual binds them to the keys above)

    def action_step(self, delta: int) -> None:
        self.browser.step(delta)
        self.refresh_view()

    def action_random(self) -> None:
        self.browser.random()
        self.refresh_view()

    def action_digit(self, digit: int) -> None:
        b = self.browser
        new = None if b.digit == digit else digit  # the same key again shows all classes
        if not b.set_filter(new, b.misclassified):
            self.notify(f"no misclassified images of class {digit}", severity="warning")
        self.refresh_view()

    def action_all_classes(self) -> None:
        self.browser.set_filter(None, self.browser.misclassified)
        self.refresh_view()

    def action_toggle_misclassified(self) -> None:
        b = self.browser
        if not b.set_filter(b.digit, not b.misclassified):
            self.notify("no misclassified images here", severity="warning")
        self.refresh_view()

    def action_zoom(self) -> None:
        self.scale = 3 - self.scale
        self.refresh_view()

    def action_go_to(self) -> None:
        box = self.query_one("#goto", Input)
        box.add_class("visible")
        box.value = ""
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        box = event.input
        box.remove_class("visible")
        self.set_focus(None)
        try:
            index = int(event.value)
            kept = self.browser.go_to(index)
        except (ValueError, IndexError):
            self.notify(f"not a test image index: {event.value!r} "
                        f"(0-{len(self.images) - 1})", severity="error")
            return
        if not kept:
            self.notify("filter cleared to show that image")
        self.refresh_view()

    def action_escape(self) -> None:
        box = self.query_one("#goto", Input)
        if box.has_class("visible"):  # Escape closes the index box, else quits
            box.remove_class("visible")
            self.set_focus(None)
        else:
            self.exit()


def build_app(model_arg: str, data_dir=None, start: int = 0, reject=None) -> ExploreApp:
    """Load MODEL and its test set, compute every probability once, return the app."""
    from .. import data
    from .common import load_model_arg, model_reject, test_set

    net, meta = load_model_arg(model_arg)
    reject = model_reject(reject, meta) or 0.0
    dataset, x_test, y_test = test_set(meta, data_dir)
    probs = net.predict_proba(x_test)
    accuracy = float(np.mean(probs.argmax(axis=1) == y_test))
    names = data.class_names(dataset)
    title = f"{Path(model_arg).name} · {dataset} test accuracy {accuracy:.2%}"
    typical = None
    if reject:
        from ..metrics import coverage_curve
        typical = None if net.input_space is None else net.input_space.typical(x_test)
        row = coverage_curve(y_test, probs, [reject], typical)[0]
        right = "-" if row["accuracy"] is None else f"{row['accuracy']:.2%}"
        title += (f" · not sure below {reject:.0%}"
                  + ("" if typical is None else " or unlike the training digits")
                  + f": {row['coverage']:.1%} answered, {right} right")
    return ExploreApp(x_test, y_test, probs, title=title, names=names, start=start,
                      reject=reject, typical=typical)


@click.command()
@click.argument("model", required=False)
@click.option("--index", "start", type=int, default=0, help="Test image to start at.")
@reject_option('Mark answers whose top probability is below T "not sure"')
@click.option("--data-dir", type=click.Path(file_okay=False), help="MNIST cache directory.")
def command(model, start, reject, data_dir):
    """Browse MODEL's test-set predictions in the terminal (keys: n/p/r, 0-9, m, g, q).

    MODEL: run dir, model file or shipped name; left out, the default shipped model."""
    import sys

    from .common import Failure
    from .extras import require
    from .shipped import DEFAULT

    model = model or DEFAULT

    require("tui", "explore")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):   # textual would wait forever
        raise Failure("barenet explore is interactive and needs a terminal (stdin and stdout); "
                      f"without one use `barenet predict {model} --index I` or "
                      f"`barenet evaluate {model}`")
    if start < 0:
        raise Failure(f"--index {start} is negative: test images are numbered from 0")
    app = build_app(model, data_dir, reject=reject)
    try:
        app.browser.go_to(start)
    except IndexError:
        raise Failure(f"--index {start} is out of range (0-{len(app.images) - 1})") from None
    app.run()
    return 0
