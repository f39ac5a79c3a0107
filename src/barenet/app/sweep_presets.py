"""The sweep presets (configs/sweeps/*.toml) and the menu's questions for running one."""

from __future__ import annotations

import os
from pathlib import Path


def preset_dir() -> Path | None:
    """configs/sweeps under the working directory, else in the source tree barenet runs from."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (root / "configs" / "sweeps").is_dir():
            return root / "configs" / "sweeps"
    return None


def presets() -> list[Path]:
    found = preset_dir()
    return sorted(found.glob("*.toml")) if found else []


def _description(path: Path) -> str:
    from .sweep_spec import SpecError, load_spec
    try:
        return load_spec(path).description
    except SpecError as exc:
        return f"(unusable: {exc})"


def ask_sweep(ask, echo) -> list[str] | None:
    """Menu: which preset, how many workers; the argv for `barenet sweep`, or None."""
    from rich.markup import escape

    found = presets()
    for n, path in enumerate(found, 1):
        echo(f"  [bold]{n}[/]  {path.stem:<15} {escape(_description(path))}")
    if not found:
        echo("no presets found (configs/sweeps/*.toml); give a sweep spec file")
    answer = ask("sweep (number or spec file)", "1" if found else "").strip()
    if answer.isdigit() and 1 <= int(answer) <= len(found):
        spec = str(found[int(answer) - 1])
    elif answer and Path(answer).is_file():
        spec = answer
    else:
        if answer:
            echo(f"[red]{escape(answer)}: no such preset or spec file[/]")
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    jobs = ask("worker processes", str(min(cores, 2))).strip()
    if not jobs.isdigit() or int(jobs) < 1:
        echo(f"[red]workers must be a positive whole number, not {escape(repr(jobs))}[/]")
        return None
    echo("the trials, report.html and best.toml go to runs/sweep-<preset>; Ctrl-C stops, "
         "the same choice again resumes")
    return ["sweep", spec, "--jobs", jobs]
