"""`barenet` alone on a terminal: a numbered menu of the main actions, each run as a subcommand.

Scripts keep using the subcommands; the menu only asks for their arguments and calls cli.main.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

ACTIONS = (
    ("train", "train a network (default: 784-256-128-10 MLP on MNIST)"),
    ("evaluate", "test accuracy and confusion matrix of a model"),
    ("explore", "browse test images and the model's predictions in the terminal"),
    ("serve", "draw digits in your browser and watch the model answer"),
    ("sweep", "train multiple model configurations (a preset from configs/sweeps)"),
)


def find_runs(root: Path = Path("runs")) -> list[Path]:
    """Run directories under `root` holding a finished model, newest first."""
    if not root.is_dir():
        return []
    runs = [p.parent for p in root.glob("*/model.safetensors")]
    return sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)


def _rich_ask(prompt: str, default: str | None = None) -> str:
    from rich.prompt import Prompt
    return Prompt.ask(prompt, default=default) if default is not None else Prompt.ask(prompt)


def _plain(text) -> str:
    """User text (paths, answers) inside rich markup: brackets are shown, not read as tags."""
    from rich.markup import escape
    return escape(str(text))


def _rich_echo(text: str = "") -> None:
    from rich.console import Console
    Console(highlight=False).print(text)


def run_menu(*, ask: Callable[..., str] | None = None,
             echo: Callable[[str], None] | None = None) -> int:
    """Show the menu until the user quits; returns 0 (or 130 after Ctrl-C at the prompt).

    ask(prompt, default) -> answer and echo(text) default to rich prompts on the terminal;
    tests pass scripted ones. End of input (Ctrl-D) quits.
    """
    from . import cli

    ask = ask or _rich_ask
    echo = echo or _rich_echo
    echo("[bold]barenet[/]: neural networks from scratch in NumPy, and an MNIST digit recognizer")
    while True:
        echo("")
        for n, (name, what) in enumerate(ACTIONS, 1):
            echo(f"  [bold]{n}[/]  {name:<9} {what}")
        echo("  [bold]q[/]  quit")
        try:
            choice = ask("choice", "q").strip().lower()
            if choice in ("q", "quit", "exit"):
                return cli.EXIT_OK
            names = [name for name, _ in ACTIONS]
            if choice.isdigit() and 1 <= int(choice) <= len(ACTIONS):
                choice = names[int(choice) - 1]
            if choice not in names:
                echo(f"[red]no such choice: {_plain(repr(choice))}[/]")
                continue
            argv = _arguments(choice, ask, echo)
        except EOFError:
            return cli.EXIT_OK
        except KeyboardInterrupt:
            echo("")
            return cli.EXIT_INTERRUPTED
        if argv is None:
            continue
        echo(f"[dim]$ barenet {_plain(' '.join(argv))}[/]")
        try:
            code = cli.main(argv)
        except KeyboardInterrupt:
            code = cli.EXIT_INTERRUPTED
        if code:
            echo(f"[dim](exit code {code})[/]")


def _arguments(action: str, ask, echo) -> list[str] | None:
    """Ask what `action` needs; the argv for cli.main, or None to go back to the menu."""
    if action == "train":
        dataset = ask("dataset (mnist, fashion-mnist)", "mnist").strip()
        epochs = ask("epochs", "20").strip()
        if not epochs.isdigit() or int(epochs) < 1:
            echo(f"[red]epochs must be a positive whole number, not {_plain(repr(epochs))}[/]")
            return None
        argv = ["train", "--dataset", dataset, "--epochs", epochs]
        out = ask("run directory (empty: runs/<dataset>-<time>)", "").strip()
        return argv + (["--out", out] if out else [])
    if action == "sweep":
        from .sweep_presets import ask_sweep
        return ask_sweep(ask, echo)
    model = _ask_model(ask, echo)
    if model is None:
        return None
    if action == "serve":
        port = ask("port", "8000").strip()
        if not port.isdigit() or not 0 < int(port) < 65536:
            echo(f"[red]not a port number: {_plain(repr(port))}[/]")
            return None
        echo(f"open http://127.0.0.1:{port}/ in a browser; Ctrl-C stops the server")
        return ["serve", model, "--port", port]
    return [action, model]


def _ask_model(ask, echo) -> str | None:
    runs = find_runs()
    if runs:
        echo("models in ./runs, newest first:")
        for n, run in enumerate(runs[:9], 1):
            echo(f"  [bold]{n}[/]  {_plain(run)}")
        answer = ask("model (number, run directory or model file)", "1").strip()
    else:
        echo("no runs in ./runs yet: train one first (choice 1), or give a path")
        answer = ask("model (run directory or model file)", "").strip()
    if answer.isdigit() and runs and 1 <= int(answer) <= min(len(runs), 9):
        return str(runs[int(answer) - 1])
    if not answer:
        return None
    if not Path(answer).exists():
        echo(f"[red]{_plain(answer)}: no such run directory or model file[/]")
        return None
    return answer
