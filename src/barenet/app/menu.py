"""`barenet` alone on a terminal: a numbered menu of the main actions, each run as a subcommand.

Scripts keep using the subcommands; the menu only asks for their arguments and hands them to
the `run` it is given (cli.main, which shows the menu: this module never imports cli).
Two entries have no subcommand: fetching and verifying the data, and the project information.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .common import EXIT_INTERRUPTED, EXIT_OK

ACTIONS = (
    ("train", "train a network (default: 784-256-128-10 MLP on MNIST)"),
    ("evaluate", "test accuracy and confusion matrix of a model"),
    ("explore", "browse test images and the model's predictions in the terminal"),
    ("serve", "draw digits in your browser and watch the model answer"),
    ("sweep", "train multiple model configurations (a preset from configs/sweeps)"),
    ("report", "write a run's report.html: curves, per-class table, mistakes"),
    ("compare", "compare runs: configuration differences and curves"),
    ("dashboard", "watch runs train in your browser: live curves, progress, ETA"),
    ("data", "download and verify the data sets (MNIST, Fashion-MNIST)"),
    ("info", "project information: version, data location, shipped models, runs"),
)


def find_runs(root: Path = Path("runs")) -> list[Path]:
    """Run directories under `root` holding a finished model, newest first; also one level
    deeper (a sweep's trials, a multi-seed run's seeds)."""
    if not root.is_dir():
        return []
    runs = [p.parent for pattern in ("*/model.safetensors", "*/*/model.safetensors")
            for p in root.glob(pattern)]
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


def run_menu(run: Callable[[list[str]], int], *, ask: Callable[..., str] | None = None,
             echo: Callable[[str], None] | None = None) -> int:
    """Show the menu until the user quits; returns 0 (or 130 after Ctrl-C at the prompt).

    run(argv) -> exit code runs a subcommand (cli.main). ask(prompt, default) -> answer and
    echo(text) default to rich prompts on the terminal; tests pass scripted ones. End of input
    (Ctrl-D) quits.
    """
    ask = ask or _rich_ask
    echo = echo or _rich_echo
    echo("[bold]barenet[/]: neural networks from scratch in NumPy, and an MNIST digit recognizer")
    while True:
        echo("")
        for n, (name, what) in enumerate(ACTIONS, 1):
            echo(f"  [bold]{n:>2}[/]  {name:<9} {what}")
        echo("   [bold]q[/]  exit")
        try:
            choice = ask("choice", "q").strip().lower()
            if choice in ("q", "quit", "exit"):
                return EXIT_OK
            names = [name for name, _ in ACTIONS]
            if choice.isdigit() and 1 <= int(choice) <= len(ACTIONS):
                choice = names[int(choice) - 1]
            if choice not in names:
                echo(f"[red]no such choice: {_plain(repr(choice))}[/]")
                continue
            argv = _arguments(choice, ask, echo)
        except EOFError:
            return EXIT_OK
        except KeyboardInterrupt:
            echo("")
            return EXIT_INTERRUPTED
        if argv is None:
            continue
        echo(f"[dim]$ barenet {_plain(' '.join(argv))}[/]")
        try:
            code = run(argv)
        except KeyboardInterrupt:
            code = EXIT_INTERRUPTED
        if code:
            echo(f"[dim](exit code {code})[/]")


def _arguments(action: str, ask, echo) -> list[str] | None:
    """Ask what `action` needs; the argv for `run`, or None to go back to the menu."""
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
    if action == "data":
        return _fetch_data(ask, echo)
    if action == "info":
        return _show_info(echo)
    if action == "compare":
        return _ask_runs(ask, echo)
    if action == "dashboard":
        root = ask("runs directory", "runs").strip()
        if not Path(root).is_dir():
            echo(f"[red]{_plain(root)}: no such directory[/]")
            return None
        port = _ask_port(ask, echo, "8050")
        if port is None:
            return None
        echo(f"open http://127.0.0.1:{port}/ in a browser; Ctrl-C stops the server")
        return ["dashboard", root, "--port", port]
    model = _ask_model(ask, echo)
    if model is None:
        return None
    if action == "serve":
        port = _ask_port(ask, echo, "8000")
        if port is None:
            return None
        echo(f"open http://127.0.0.1:{port}/ in a browser; Ctrl-C stops the server")
        return ["serve", model, "--port", port]
    return [action, model]


def _ask_port(ask, echo, default: str) -> str | None:
    port = ask("port", default).strip()
    if not port.isdigit() or not 0 < int(port) < 65536:
        echo(f"[red]not a port number: {_plain(repr(port))}[/]")
        return None
    return port


def _ask_runs(ask, echo) -> list[str] | None:
    """compare: two or more runs, by number in ./runs or by path."""
    runs = find_runs()
    for n, run in enumerate(runs[:9], 1):
        echo(f"  [bold]{n}[/]  {_plain(run)}")
    if len(runs) < 2:
        echo("fewer than two runs in ./runs: give run directories")
    answer = ask("runs to compare (numbers or run directories, separated by spaces)",
                 "1 2" if len(runs) >= 2 else "").split()
    chosen = []
    for token in answer:
        if token.isdigit() and 1 <= int(token) <= min(len(runs), 9):
            chosen.append(str(runs[int(token) - 1]))
        elif Path(token).is_dir():
            chosen.append(token)
        else:
            echo(f"[red]{_plain(token)}: no such run[/]")
            return None
    if len(chosen) < 2:
        echo("[red]compare needs at least two runs[/]")
        return None
    return ["compare", *chosen]


def _fetch_data(ask, echo) -> None:
    """Fetch (or find in the cache) a data set and check every file's SHA-256."""
    from ..data import DataError, default_data_dir, load_dataset
    dataset = ask("data set (mnist, fashion-mnist, both)", "mnist").strip().lower()
    names = ["mnist", "fashion-mnist"] if dataset == "both" else [dataset]
    for name in names:
        try:
            (x_train, _), (x_test, _) = load_dataset(name, progress=True)
        except DataError as exc:
            echo(f"[red]{_plain(exc)}[/]")
            continue
        echo(f"{name}: {len(x_train):,} training and {len(x_test):,} test images, every file's "
             f"SHA-256 verified; cached in {_plain(default_data_dir() / name)}")
    return None


def _show_info(echo) -> None:
    """Version, where the data and the runs are, the shipped models."""
    import platform

    import numpy as np

    from .. import __version__
    from ..data import default_data_dir
    from ..data.mnist import FILES
    from .shipped import DEFAULT, SHIPPED, shipped_path

    echo(f"[bold]barenet {__version__}[/]  (Python {platform.python_version()}, "
         f"NumPy {np.__version__})")
    data_dir = default_data_dir()
    cached = [name for name in ("mnist", "fashion-mnist")
              if all((data_dir / name / stem).is_file() for stem in FILES)]
    echo(f"data:    {_plain(data_dir)}  (cached: {', '.join(cached) or 'none yet'}; "
         f"BARENET_DATA_DIR moves it)")
    for name, entry in SHIPPED.items():
        path = shipped_path(name)
        if path is None:
            continue
        default = " (default)" if name == DEFAULT else ""
        echo(f"model:   {name}{default}  {_plain(entry.title)}  "
             f"{path.stat().st_size // 1024} kB")
    if not any(shipped_path(name) for name in SHIPPED):
        echo("model:   none shipped with this installation")
    else:
        echo("         (barenet models: their accuracy and the command that made each)")
    runs = find_runs()
    where = Path("runs").resolve()
    echo(f"runs:    {_plain(where)}  ({len(runs)} finished"
         + (f", newest {_plain(runs[0])})" if runs else ")"))
    echo("docs:    barenet --help, and barenet COMMAND --help for each command")
    return None


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
