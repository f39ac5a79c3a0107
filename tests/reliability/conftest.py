"""Helpers every reliability test uses: run the CLI, check its one-line error, prove that
nothing of the user's changed and nothing was left behind.

The contract every case checks (docs/reliability.md):
- exit code 2 for bad input, 1 for a failure the user did not cause (HTTP: a 4xx);
- stderr ends with one line starting "error:", and no traceback anywhere;
- no file of the user changed, nothing executed, no stray temporary file left.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FAKE = HERE / "fake_barenet.py"


def _parent_conftest():
    """tests/conftest.py. Both files are imported as `conftest`, and whichever came last is
    the one `from conftest import ...` finds: tests elsewhere that import synthetic_digits
    lazily must find it here too."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("_barenet_tests_conftest",
                                                  HERE.parent / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


synthetic_digits = _parent_conftest().synthetic_digits


@dataclass
class Done:
    code: int
    out: str
    err: str


def cli(*args, fake_data: bool = True, env: dict | None = None, timeout: float = 120,
        input: str | None = None, cwd=None) -> Done:
    """Run `barenet ARGS` in a child process (synthetic digits unless fake_data=False)."""
    argv = ([sys.executable, str(FAKE)] if fake_data
            else [sys.executable, "-c", "from barenet.app.cli import run; run()"])
    full_env = {**os.environ, "BARENET_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "200",
                **(env or {})}
    full_env.pop("BARENET_DEBUG", None)
    done = subprocess.run([*argv, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd,
                          input=input, stdin=None if input is not None else subprocess.DEVNULL)
    return Done(done.returncode, done.stdout, done.stderr)


def run_main(capsys, *args) -> Done:
    """`barenet ARGS` in this process (faster; for cases that need no process of their own)."""
    from barenet.app.cli import main
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return Done(code, captured.out, captured.err)


# The files of a finished run.
RUN_FILES = {"checkpoint.safetensors", "config.json", "history.json", "metrics.json",
             "model.safetensors"}


def default_sigint() -> None:
    """In a child before exec: Ctrl-C's default action. A shell starts background jobs with
    SIGINT ignored, children inherit that, and Python then never raises KeyboardInterrupt:
    tests that send SIGINT would see the run finish instead (as CI run with `&` did)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen(*args, env: dict | None = None, **kw) -> subprocess.Popen:
    """Start `barenet ARGS` (synthetic digits) without waiting for it."""
    full_env = {**os.environ, "BARENET_OFFLINE": "1", "NO_COLOR": "1", **(env or {})}
    return subprocess.Popen([sys.executable, str(FAKE), *map(str, args)], env=full_env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint,
                            **kw)


def assert_error(done: Done, code: int, *words: str) -> str:
    """Exit `code`, no traceback, and stderr's last line is one "error: ..." line that
    contains every one of `words` (case-insensitive). Returns that line."""
    both = done.out + done.err
    assert "Traceback" not in both, both
    assert done.code == code, (done.code, both)
    lines = [line for line in done.err.splitlines() if line.strip()]
    assert lines, f"no message on stderr (stdout: {done.out!r})"
    last = lines[-1]
    assert last.startswith("error: ") or last.startswith("Error: "), done.err
    assert sum(line.lower().startswith("error") for line in lines) == 1, done.err
    for word in words:
        assert word.lower() in last.lower(), (word, last)
    return last


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root: (sha256, mode). Compare two snapshots to prove nothing changed."""
    root = Path(root)
    if not root.exists():
        return {}
    if root.is_file():
        return {root.name: (hashlib.sha256(root.read_bytes()).hexdigest(), root.stat().st_mode)}
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                       p.stat().st_mode)
            for p in sorted(root.rglob("*")) if p.is_file()}


def stray_files(root: Path) -> list[str]:
    """Temporary or partial files a crash or refusal left behind."""
    root = Path(root)
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.endswith((".tmp", ".part", ".partial", ".lock-tmp"))
                  or (p.name.startswith(".") and ".tmp" in p.name))


@pytest.fixture
def tiny_run(tmp_path_factory) -> Path:
    """A finished run on the synthetic digits (2 epochs), made once per test that asks."""
    out = tmp_path_factory.mktemp("run") / "run"
    done = cli("train", "--out", out, "--epochs", 2, "--quiet")
    assert done.code == 0, done.err
    return out
