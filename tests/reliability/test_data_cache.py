"""The data cache when its files are damaged, extended or unreadable.

Synthetic IDX files with the pinned digests swapped for theirs (as tests/test_data.py does),
so CI without MNIST runs every case; one case uses the real cached files when present.
"""

from __future__ import annotations

import builtins
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from barenet.data import DataError, errors, mnist
from barenet.data import sources as src
from barenet.data.idx import make_idx
from conftest import Done, assert_error, snapshot  # tests/reliability/conftest.py

FILES = mnist.FILES
# Before this fix the categories were plain UserWarning / RuntimeWarning (old-code runs).
CorruptCacheWarning = getattr(errors, "CorruptCacheWarning", UserWarning)
CacheWriteWarning = getattr(errors, "CacheWriteWarning", RuntimeWarning)
# `barenet ...` with the pinned digests of the synthetic files (FAKE_DIGESTS, JSON).
LAUNCH = """
import json, os, sys
from barenet.data import mnist
mnist.DIGESTS["mnist"] = {k: tuple(v) for k, v in json.loads(os.environ["FAKE_DIGESTS"]).items()}
from barenet.app.cli import run
sys.argv[0] = "barenet"
run()
"""


def _files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    values = (rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
              np.array([5, 0, 4, 1, 9], np.uint8),
              rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), np.array([7, 2, 1], np.uint8))
    return {stem: make_idx(v) for stem, v in zip(FILES, values)}


TINY = _files()
TABLE = {s: (hashlib.sha256(b).hexdigest(), len(b)) for s, b in TINY.items()}


@pytest.fixture(autouse=True)
def pinned(monkeypatch):
    monkeypatch.setenv("BARENET_OFFLINE", "1")
    monkeypatch.setitem(mnist.DIGESTS, "mnist", dict(TABLE))


@pytest.fixture
def cache(tmp_path) -> Path:
    """<data dir>/mnist holding the four verified files; returns the data dir."""
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    for stem, body in TINY.items():
        (tmp_path / "data" / "mnist" / stem).write_bytes(body)
    return tmp_path / "data"


def _barenet(*args, data_dir: Path) -> Done:
    env = {**os.environ, "BARENET_OFFLINE": "1", "NO_COLOR": "1",
           "FAKE_DIGESTS": json.dumps(TABLE)}
    env.pop("BARENET_DEBUG", None)
    done = subprocess.run([sys.executable, "-c", LAUNCH, *map(str, args),
                           "--data-dir", str(data_dir)], capture_output=True, text=True,
                          env=env, stdin=subprocess.DEVNULL, timeout=120)
    return Done(done.returncode, done.stdout, done.stderr)


# A verification problem is one plain line, not Python's warning display.

def test_corrupt_cache_warning_is_one_plain_line(cache):
    """The issue: a raw `UserWarning` with a source line. Now: `warning: ...`, then the
    fetch from another copy (here: the .gz beside the cache) succeeds."""
    cached = cache / "mnist" / FILES[0]
    cached.write_bytes(TINY[FILES[0]][:-1] + b"\x00")
    for stem, body in TINY.items():
        (cache / f"{stem}.gz").write_bytes(gzip.compress(body))
    done = _barenet("predict", "mlp", "--index", "0", data_dir=cache)
    assert done.code == 0, done.err
    lines = done.err.strip().splitlines()
    assert len(lines) == 1, done.err
    assert lines[0].startswith("warning: cached ") and "failed verification" in lines[0]
    assert "UserWarning" not in done.err and "warnings.warn" not in done.err
    assert (cache / "mnist" / f"{FILES[0]}.corrupt").exists()


def test_warnings_keep_their_categories(cache):
    (cache / "mnist" / FILES[3]).write_bytes(TINY[FILES[3]][:-1] + b"\x07")
    with pytest.warns(CorruptCacheWarning) as caught, pytest.raises(DataError):
        mnist.load_mnist(cache, progress=False)
    assert issubclass(caught[0].category, UserWarning)
    assert issubclass(CacheWriteWarning, RuntimeWarning)


def test_corrupt_cache_without_another_copy_is_one_line_exit_1(cache):
    (cache / "mnist" / FILES[1]).write_bytes(TINY[FILES[1]][:-1] + b"\x03")
    done = _barenet("predict", "mlp", "--index", "0", data_dir=cache)
    assert_error(done, 1, "no verified copy", FILES[1])
    assert [ln for ln in done.err.splitlines() if ln.startswith("warning:")], done.err
    assert "Traceback" not in done.err and "UserWarning" not in done.err


# Appended bytes: the right count, singular and plural right.

@pytest.mark.parametrize("extra,words", [(16, "16 bytes too many"), (1, "1 byte too many"),
                                         (70_000, "70000 bytes too many")])
def test_appended_bytes_are_counted(cache, extra, words):
    cached = cache / "mnist" / FILES[2]
    cached.write_bytes(TINY[FILES[2]] + b"\x00" * extra)
    with pytest.warns(CorruptCacheWarning, match=words), pytest.raises(DataError) as info:
        mnist.load_mnist(cache, progress=False)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert "1 trailing bytes" not in str(info.value)


def test_appended_bytes_in_a_gz_copy_are_counted(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for stem, body in TINY.items():
        body = body + b"\x00" * 16 if stem == FILES[1] else body
        (data / f"{stem}.gz").write_bytes(gzip.compress(body))
    with pytest.raises(DataError, match="16 bytes too many"):
        mnist.load_mnist(data, progress=False)


def test_idx_trailing_bytes_singular_and_plural():
    from barenet.data.idx import parse_idx
    body = make_idx(np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match=r"^1 trailing byte after"):
        parse_idx(body + b"\x00")
    with pytest.raises(ValueError, match=r"^16 trailing bytes after"):
        parse_idx(body + b"\x00" * 16)


def test_real_cache_with_16_appended_bytes(tmp_path, monkeypatch):
    """The issue's case on the real files (copied; the user's cache is never touched)."""
    real = Path.home() / ".cache" / "barenet" / "mnist"
    if not all((real / stem).is_file() for stem in FILES):
        pytest.skip(f"no real MNIST cache at {real}")
    monkeypatch.undo()                                    # the real pinned digests
    monkeypatch.setenv("BARENET_OFFLINE", "1")
    (tmp_path / "mnist").mkdir()
    for stem in FILES:
        shutil.copyfile(real / stem, tmp_path / "mnist" / stem)
    with open(tmp_path / "mnist" / FILES[3], "ab") as f:
        f.write(b"\x00" * 16)
    with pytest.warns(CorruptCacheWarning, match="16 bytes too many"), \
            pytest.raises(DataError, match="16 bytes too many"):
        mnist.load_mnist(tmp_path, progress=False, sources=["dir"])


# An intact file the user cannot read is not corrupt: named, left alone.

def test_unreadable_cache_file_is_left_alone(cache, monkeypatch):
    before = snapshot(cache)
    real_open = builtins.open

    def refusing_open(path, *args, **kwargs):
        if str(path).endswith(FILES[0]):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # and no warning about it
        with pytest.raises(DataError) as info:
            mnist.load_mnist(cache, progress=False)
    message = str(info.value)
    assert "cannot be read" in message and "Permission denied" in message
    assert "chmod" in message and "corrupt" not in message and "\n" not in message
    monkeypatch.undo()
    assert snapshot(cache) == before
    assert not list(cache.rglob("*.corrupt"))


def test_unreadable_cache_file_in_the_cli_exit_1(cache):
    """Really unreadable (chmod 000) where the tests do not run as root."""
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root reading (the "
                    "monkeypatched case above covers it)")
    target = cache / "mnist" / FILES[0]
    target.chmod(0)
    try:
        done = _barenet("predict", "mlp", "--index", "0", data_dir=cache)
    finally:
        target.chmod(0o644)
    assert_error(done, 1, "cannot be read", str(target))
    assert target.read_bytes() == TINY[FILES[0]]
    assert not list(cache.rglob("*.corrupt"))


def test_eio_on_a_cache_file_is_unreadable_not_corrupt(cache, monkeypatch):
    before = snapshot(cache)

    def failing_read(path, limit):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(src, "read_file", failing_read)
    with pytest.raises(DataError, match="cannot be read .Input/output error"):
        mnist.load_mnist(cache, progress=False)
    assert snapshot(cache) == before


def test_cache_write_failure_is_one_plain_line(tmp_path):
    """A data dir whose cache folder cannot be made: the data loads, one warning line."""
    data = tmp_path / "data"
    data.mkdir()
    for stem, body in TINY.items():
        (data / f"{stem}.gz").write_bytes(gzip.compress(body))
    (data / "mnist").write_text("a file where the cache folder goes\n")
    done = _barenet("predict", "mlp", "--index", "0", data_dir=data)
    assert done.code == 0, done.err
    lines = done.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: could not cache"), done.err
    assert (data / "mnist").read_text() == "a file where the cache folder goes\n"
