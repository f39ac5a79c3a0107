"""Training stopped from outside or by the machine: SIGTERM / SIGHUP end like Ctrl-C, a full
disk or an unwritable --out is one line, a diverging run names the last good checkpoint only
when there is one (and that one loads and is finite)."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from barenet.serialize import load_arrays
from conftest import Done, assert_error, cli, popen, run_main, snapshot, stray_files

pytestmark = pytest.mark.reliability

ARGS = ["--batch-size", "100", "--set", "data.validation=0", "--set", "schedule.name='none'",
        "-q"]


def checkpoint_epoch(out: Path) -> int:
    arrays, meta = load_arrays(out / "checkpoint.safetensors")
    assert all(np.isfinite(v).all() for v in arrays.values() if v.dtype.kind == "f")
    return meta["checkpoint"]["epoch"]


def same_weights(a: Path, b: Path) -> bool:
    x, _ = load_arrays(a / "model.safetensors")
    y, _ = load_arrays(b / "model.safetensors")
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


# SIGTERM / SIGHUP / SIGINT on a real process, after its first checkpoint.

@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129),
                                       (signal.SIGINT, 130)])
def test_a_signal_mid_training_keeps_the_checkpoint_and_names_resume(tmp_path, sig, code):
    out = tmp_path / "run"
    proc = popen("train", "--out", out, "--epochs", "30", *ARGS,
                 env={"BARENET_FAKE_N": "3000"})
    deadline = time.monotonic() + 60
    while not (out / "checkpoint.safetensors").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert signal.Signals(sig).name in last or sig == signal.SIGINT, last
    assert "interrupted" in last or "stopped" in last
    assert f"barenet train --resume {out}" in last
    assert checkpoint_epoch(out) >= 1
    assert not (out / ".barenet.lock").exists() and stray_files(out) == []
    assert json.loads((out / "progress.json").read_text())["state"] == "interrupted"
    done = cli("train", "--resume", out, "--epochs", "3", "-q", env={"BARENET_FAKE_N": "3000"})
    assert done.code == 0, done.err


def test_sigterm_before_the_first_epoch_ends_keeps_nothing(tmp_path):
    """Stopped while loading data: nothing was trained, so nothing is left."""
    out = tmp_path / "a" / "run"
    script = ("import sys, time; sys.path.insert(0, {!r}); import fake_barenet, barenet.data\n"
              "def slow(*a, **k):\n    open({!r}, 'w').close(); time.sleep(60)\n"
              "barenet.data.load_dataset = slow\n"
              "from barenet.app.cli import run; sys.argv[0] = 'barenet'; run()\n"
              ).format(str(Path(__file__).parent), str(tmp_path / "loading"))
    proc = subprocess.Popen([sys.executable, "-c", script, "train", "--out", str(out), *ARGS],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "loading").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    assert (out / ".barenet.lock").exists()                # claimed before the data loads
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "nothing was kept" in err.strip().splitlines()[-1]
    assert not (tmp_path / "a").exists()


# Disk full: simulated in process (an fsync that fails with ENOSPC for one file).

@pytest.fixture
def disk_full_at(monkeypatch):
    """disk_full_at(name, n): the n-th atomic write of run file `name` fails with ENOSPC."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to tell which file an fsync is for")
    real = os.fsync
    seen: dict[str, int] = {}
    target = {}

    def fsync(fd):
        m = re.search(r"/\.(.+)\.[a-z0-9_]{8}\.tmp$", os.readlink(f"/proc/self/fd/{fd}"))
        if m:
            seen[m.group(1)] = seen.get(m.group(1), 0) + 1
            if (m.group(1), seen[m.group(1)]) == (target.get("name"), target.get("n")):
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    def arm(name, n=1):
        target.update(name=name, n=n)
        seen.clear()
    return arm


@pytest.mark.parametrize("name, n, kept_epoch", [
    ("config.json", 1, None), ("checkpoint.safetensors", 1, None),
    ("checkpoint.safetensors", 3, 2), ("metrics.json", 1, 4), ("model.safetensors", 1, 4),
])
def test_disk_full_while_writing_a_run(tiny_data, tmp_path, capsys, disk_full_at, name, n,
                                       kept_epoch):
    out = tmp_path / "run"
    command = ["train", "--out", out, "--epochs", "4", *ARGS]
    disk_full_at(name, n)
    line = assert_error(run_main(capsys, *command), 1, "disk is full", name)
    disk_full_at(None)
    assert stray_files(tmp_path) == []
    if kept_epoch is None:                     # no epoch finished: nothing kept, run it again
        assert "nothing was kept" in line and not out.exists()
        assert run_main(capsys, *command).code == 0
    else:
        assert f"epoch {kept_epoch}" in line and f"--resume {out}" in line
        assert checkpoint_epoch(out) == kept_epoch
        assert run_main(capsys, "train", "--resume", out, "-q").code == 0
    straight = tmp_path / "straight"
    assert run_main(capsys, "train", "--out", straight, "--epochs", "4", *ARGS).code == 0
    assert same_weights(out, straight)


def _mount_tmpfs(where: Path, options: str) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real small file system needs root (mount -t tmpfs); the simulated "
                    "ENOSPC tests above cover the same code")
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not allowed here: {done.stderr.strip()}")


def test_disk_full_on_a_real_small_file_system(tmp_path):
    """A 3 MB tmpfs holds one checkpoint (1.9 MB) but not the next beside it."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=3m")
    try:
        out = disk / "run"
        done = cli("train", "--out", out, "--epochs", "3", *ARGS)
        line = assert_error(done, 1, "disk is full", "checkpoint.safetensors", "epoch 1",
                            f"--resume {out}")
        assert "free some space" in line
        assert checkpoint_epoch(out) == 1 and stray_files(disk) == []
        assert not (out / ".barenet.lock").exists()
        moved = tmp_path / "moved"
        shutil.copytree(out, moved)
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    assert cli("train", "--resume", moved, "-q").code == 0
    straight = tmp_path / "straight"
    assert cli("train", "--out", straight, "--epochs", "3", *ARGS).code == 0
    assert same_weights(moved, straight)


def test_out_on_a_read_only_file_system(tmp_path):
    disk = tmp_path / "ro"
    _mount_tmpfs(disk, "ro,size=1m")
    try:
        assert_error(cli("train", "--out", disk / "run", "--epochs", "1", *ARGS), 2,
                     "read-only file system", "choose a directory you can write to")
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_out_in_a_directory_the_user_cannot_write():
    """A real permission error: as root, the child runs as nobody (root ignores chmod)."""
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="barenet-perm-"))     # pytest's tmp is root-only
    try:
        base.chmod(0o755)
        parent = base / "locked"
        parent.mkdir(mode=0o555)
        parent.chmod(0o555)
        kw = {"user": 65534, "group": 65534} if os.geteuid() == 0 else {}
        try:
            proc = popen("train", "--out", parent / "run", "--epochs", "1", *ARGS,
                         env={"HOME": str(parent)}, **kw)
        except PermissionError as exc:
            pytest.skip(f"the user nobody cannot run this Python ({exc}); the in-process "
                        f"permission test in test_run_directory covers the message")
        out, err = proc.communicate(timeout=120)
        if os.geteuid() == 0 and ("ModuleNotFoundError" in err or "Permission" in err
                                  and "barenet" not in err):
            pytest.skip(f"the user nobody cannot run this Python installation: {err[-200:]}")
        assert_error(Done(proc.returncode, out, err), 2, "permission denied",
                     str(parent / "run"), "choose a directory you can write to")
        assert os.listdir(parent) == []
    finally:
        (base / "locked").chmod(0o755)
        shutil.rmtree(base)


# Divergence: the truth about the checkpoint.

def _loss_going_wrong(monkeypatch, at_call: int, how: str):
    """The training loss works normally, then at call `at_call` returns NaN ("nan"), or a
    finite loss with a gradient that overflows the weights in that step ("overflow")."""
    import barenet.app.runs as runs
    real = runs.build_loss
    calls = [0]

    def build_loss(config):
        loss = real(config)

        def wrapped(logits, labels):
            value, grad = loss(logits, labels)
            calls[0] += 1
            if calls[0] == at_call and how == "overflow":
                grad = np.full_like(grad, 3e38)
            elif calls[0] >= at_call and how == "nan":
                value = float("nan")
            return value, grad
        return wrapped
    monkeypatch.setattr(runs, "build_loss", build_loss)


@pytest.mark.parametrize("how, at_call, good_epoch", [("nan", 13, 2), ("overflow", 12, 1)])
def test_a_run_diverging_later_names_its_last_good_checkpoint(tiny_data, tmp_path, capsys,
                                                              monkeypatch, how, at_call,
                                                              good_epoch):
    """6 batches an epoch (600 images, 100 a batch): call 13 is epoch 3's first batch; the
    overflow in call 12 (epoch 2's last step) is only visible in the weights."""
    _loss_going_wrong(monkeypatch, at_call, how)
    out = tmp_path / "run"
    line = assert_error(run_main(capsys, "train", "--out", out, "--epochs", "5", *ARGS), 1,
                        "training stopped", "last good checkpoint", f"epoch {good_epoch}")
    assert str(out / "checkpoint.safetensors") in line
    assert checkpoint_epoch(out) == good_epoch             # loads, every array finite
    assert not (out / "model.safetensors").exists() and stray_files(out) == []


# A flipped bit (serialize's checksum finds it): one line, nothing touched.

@pytest.mark.parametrize("more", [[], ["--epochs", "3"]])
def test_resume_reports_a_damaged_checkpoint_and_changes_nothing(tiny_data, tmp_path, capsys,
                                                                 more):
    out = tmp_path / "run"
    assert run_main(capsys, "train", "--out", out, "--epochs", "2", *ARGS).code == 0
    (out / "model.safetensors").unlink()                   # stopped before its end
    path = out / "checkpoint.safetensors"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    before = snapshot(out)
    done = run_main(capsys, "train", "--resume", out, *more, "-q")
    assert_error(done, 2, "checkpoint.safetensors", "damaged")
    assert snapshot(out) == before
