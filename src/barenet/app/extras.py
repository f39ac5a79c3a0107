"""Optional extras (pyproject's optional dependencies) and the one line a command says when
the one it needs is missing: checked before any work, never a traceback.

Commands whose module imports an extra at the top (serve, explore) get a stand-in from
`stand_in` when that import fails, so `barenet serve --help` still answers.
"""

from __future__ import annotations

import importlib.util

import click

from .common import EXIT_FAIL, Failure

# extra -> the modules it provides (a tuple inside: any one of them will do).
EXTRAS: dict[str, tuple] = {
    "plots": ("matplotlib",),
    "web": ("fastapi", "uvicorn", ("python_multipart", "multipart")),
    "tui": ("textual",),
    "sweep": ("optuna", "psycopg", "matplotlib"),
    "sklearn": ("sklearn",),
    "onnx": ("onnx", "onnxruntime"),
}
PACKAGES = {"python_multipart": "python-multipart", "multipart": "python-multipart",
            "sklearn": "scikit-learn"}


def install_hint(extra: str) -> str:
    return f"pip install 'barenet[{extra}]'"


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None   # None also when blocked
    except (ImportError, ValueError):
        return False


def missing_packages(extra: str) -> list[str]:
    """The distributions of `extra` that cannot be imported here (empty: all present)."""
    missing = []
    for entry in EXTRAS[extra]:
        choices = entry if isinstance(entry, tuple) else (entry,)
        if not any(_present(m) for m in choices):
            missing.append(PACKAGES.get(choices[0], choices[0]))
    return missing


def message(command: str, extra: str, missing: list[str]) -> str:
    return (f"barenet {command} needs the {extra} extra ({', '.join(missing)} not installed): "
            f"{install_hint(extra)}")


def require(extra: str, command: str) -> None:
    """Raise a one-line Failure (exit 1) naming what to install, unless `extra` is present."""
    missing = missing_packages(extra)
    if missing:
        raise Failure(message(command, extra, missing), EXIT_FAIL)


def extra_of(module: str | None) -> str | None:
    """The extra that provides top-level `module` (as in ModuleNotFoundError.name), if any."""
    top = (module or "").split(".")[0]
    for extra, entries in EXTRAS.items():
        for entry in entries:
            if top in (entry if isinstance(entry, tuple) else (entry,)):
                return extra
    return None


def stand_in(name: str, short_help: str, extra: str) -> click.Command:
    """A command that takes any arguments and only says which extra to install; its --help
    shows the command's short help and the same line."""
    line = message(name, extra, missing_packages(extra) or [extra])

    def callback(args):
        raise Failure(line, EXIT_FAIL)

    return click.Command(
        name, callback=callback, short_help=short_help,
        help=f"{short_help}\n\n{line}. Its options are listed once it is installed.",
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
