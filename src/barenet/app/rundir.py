"""A run directory claimed by one process: its lock, what may already be in it, and what a
run that fails before its first checkpoint leaves behind (nothing).

The lock is flock(2) on DIR/.barenet.lock, in the spirit of git's index.lock, but released by
the kernel when its process dies, even by kill -9: a lock file left behind blocks nobody.
It is taken before anything is written into the directory or any data is loaded, and held
for the whole train / resume (reentrant within the process, so `train` can hold it around
train_run and the report).
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, so no lock
    fcntl = None

LOCK_FILE = ".barenet.lock"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
# Every file barenet writes into a run directory (or, seeds.json, a multi-seed directory).
RUN_FILES = (CONFIG_FILE, "history.json", "progress.json", "metrics.json", MODEL_FILE,
             CHECKPOINT_FILE, "report.html", "seeds.json")
# modelfile.atomic_write_bytes's temporaries: "." + name + "." + mkstemp's 8 characters + ".tmp"
# (a kill -9 between mkstemp and the rename leaves one). Only these are ever removed.
STALE_TEMPORARY = re.compile(r"\.(" + "|".join(map(re.escape, RUN_FILES)) + r")\.[a-z0-9_]{8}\.tmp")

_HELD: dict[Path, RunDirectory] = {}


class RunError(ValueError):
    """A problem with a run directory the user named; one line, exit 2."""


class RunBusy(RunError):
    """Another process holds the run directory's lock."""


class RunFailure(RuntimeError):
    """A run that failed for a reason the user did not cause (disk full); one line, exit 1."""


def started_run(path: Path) -> bool:
    """A run barenet began here: a config.json that barenet wrote (it records its version)."""
    try:
        raw = json.loads((Path(path) / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and "barenet_version" in raw


def holds_run(path: Path) -> bool:
    return ((path / MODEL_FILE).exists() or (path / CHECKPOINT_FILE).exists()
            or started_run(path))


def claim(path: Path, *, resume: bool = False) -> RunDirectory:
    """`with claim(DIR) as run:` DIR locked for this process (the holder's own claim when this
    process already holds it)."""
    held = _HELD.get(Path(path).absolute())
    return held.again() if held is not None else RunDirectory(path, resume=resume)


class RunDirectory:
    """A claimed run directory. A new run (not resume) refuses a directory holding anything
    but leftovers of barenet's own; when it fails before `keep` is set (its first checkpoint),
    it removes exactly what it made: the run's files, then the directories it created, when
    empty."""

    def __init__(self, path: Path, *, resume: bool = False):
        self.path, self.resume = Path(path), resume
        self.key = self.path.absolute()
        self.created: list[Path] = []         # directories made here, outermost first
        self.keep = resume                    # a resumed run's directory is the user's
        self._fd: int | None = None
        self._depth = 0

    def again(self) -> RunDirectory:
        return self

    def __enter__(self) -> RunDirectory:
        self._depth += 1
        if self._depth > 1:
            return self
        try:
            if self.resume:
                self._check_resumable_path()
            else:
                self._make()
            self._lock()
            self._check_contents()
            self._remove_stale_temporaries()
        except BaseException:
            self._depth = 0
            self._release()
            self._remove_created()
            raise
        _HELD[self.key] = self
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self._depth -= 1
        if self._depth > 0:
            return
        _HELD.pop(self.key, None)
        # A signal can land between mkstemp and the cleanup of an atomic write: whatever
        # temporary of ours is left now, no write of ours is under way any more.
        self._remove_stale_temporaries()
        if kind is not None and not self.keep:
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)
        self._release()
        if kind is not None and not self.keep:
            self._remove_created()

    def _check_resumable_path(self) -> None:
        if not self.path.exists():
            raise RunError(f"--resume {self.path}: no such run directory")
        if not self.path.is_dir():
            raise RunError(f"--resume {self.path}: a file, not a run directory")

    def _make(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"--out {self.path} is a file, not a directory")
        missing, p = [], self.path.absolute()
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                continue                        # made meanwhile by someone else: not ours
            except OSError as exc:
                raise _cannot_write(exc, f"--out {self.path}: cannot create {d}") from None
            self.created.append(d)

    def _lock(self) -> None:
        lock = self.path / LOCK_FILE
        while True:
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise _cannot_write(exc, f"{self.path}: cannot write in it") from None
            if fcntl is None:
                self._fd = fd
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _holder(fd)
                os.close(fd)
                raise RunBusy(f"{self.path} is in use by another barenet process "
                              f"(pid {pid}); wait for it to finish, or choose another "
                              f"directory") from None
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    os.close(fd)
                    raise
                # A file system without locks (some network mounts): run unlocked.
            # The holder before us may have removed the file as we opened it: then our lock
            # is on a file no one else will open; take the lock on the one at the path.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def _check_contents(self) -> None:
        if self.resume:
            if not holds_run(self.path):
                raise RunError(f"--resume {self.path}: no {CHECKPOINT_FILE} and no "
                               f"{CONFIG_FILE} of barenet's; is this a run directory?")
            return
        if holds_run(self.path):
            raise RunError(f"{self.path} already holds a run; choose another --out, or "
                           f"resume it with `barenet train --resume {self.path}`")
        others = sorted(name for name in os.listdir(self.path)
                        if name != LOCK_FILE and not STALE_TEMPORARY.fullmatch(name))
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise RunError(f"--out {self.path} is not empty and is not a barenet run (it "
                           f"holds {shown}); nothing was changed: choose a new or empty "
                           f"directory")

    def _remove_stale_temporaries(self) -> None:
        """Temporaries a kill -9 left mid-write: no one else writes here while we hold the
        lock, so every file of that exact naming is dead."""
        try:
            names = os.listdir(self.path)
        except OSError:
            return
        for name in names:
            if STALE_TEMPORARY.fullmatch(name) and (self.path / name).is_file():
                (self.path / name).unlink(missing_ok=True)

    def _release(self) -> None:
        if self._fd is None:
            return
        # Unlinked while still locked: a process waiting on this file finds it gone and
        # retries on a new one (the samestat check above).
        (self.path / LOCK_FILE).unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def _remove_created(self) -> None:
        for d in reversed(self.created):
            try:
                d.rmdir()                       # only when empty: never anything of anyone's
            except OSError:
                break
        self.created = []


def _holder(fd: int) -> str:
    """The pid written in a lock file (the holder writes it just after locking)."""
    for _ in range(20):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return text
        time.sleep(0.01)
    return "unknown"


def _cannot_write(exc: OSError, what: str) -> Exception:
    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return RunFailure(f"{what}: the disk is full; free some space and run the command again")
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        return RunError(f"{what} ({reason}); choose a directory you can write to")
    if isinstance(exc, (NotADirectoryError, FileNotFoundError)):
        return RunError(f"{what} ({reason}): a part of the path is a file or missing")
    return RunFailure(f"{what} ({reason})")
