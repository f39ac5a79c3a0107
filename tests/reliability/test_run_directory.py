"""The run directory: `train --out` never writes into a directory that is not a barenet run,
a run that cannot start leaves nothing behind, stale temporaries of a kill -9 are cleared,
and two processes never share one directory (the lock).

In-process (`main([...])` on the synthetic digits) wherever no second process is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from barenet.app.cli import main
from barenet.serialize import load_arrays
from conftest import RUN_FILES, Done, assert_error, cli, popen, run_main, snapshot

pytestmark = pytest.mark.reliability

FAST = ["--epochs", "2", "--batch-size", "100", "--set", "model.hidden=[16]",
        "--set", "data.validation=100", "--set", "schedule.name='none'", "-q"]


# 1. An existing directory that is not a barenet run is refused, whatever it holds.

@pytest.mark.parametrize("name", ["config.json", "metrics.json", "notes.txt", ".hidden",
                                  "history.json", "data/"])
def test_out_holding_a_file_of_the_user_is_refused(tiny_data, tmp_path, capsys, name):
    out = tmp_path / "mine"
    out.mkdir()
    if name.endswith("/"):
        (out / name).mkdir()
        (out / name / "x.csv").write_text("1,2\n")
    else:
        (out / name).write_text('{"mine": true}\n')
    before = snapshot(out)
    done = run_main(capsys, "train", "--out", out, *FAST)
    assert_error(done, 2, str(out), "not a barenet run", name.rstrip("/"))
    assert snapshot(out) == before
    assert sorted(os.listdir(out)) == [name.rstrip("/")]


def test_an_empty_existing_directory_is_fine_and_is_kept(tiny_data, tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    assert run_main(capsys, "train", "--out", out, *FAST).code == 0
    assert set(os.listdir(out)) == RUN_FILES


def test_a_finished_run_is_refused_and_names_resume(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(capsys, "train", "--out", out, *FAST).code == 0
    before = snapshot(out)
    assert_error(run_main(capsys, "train", "--out", out, *FAST), 2, "already holds a run",
                 "--resume")
    assert snapshot(out) == before


def test_a_lock_file_left_by_a_killed_process_is_not_a_user_file(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".barenet.lock").write_text("999999\n")          # its process died long ago
    assert run_main(capsys, "train", "--out", out, *FAST).code == 0
    assert set(os.listdir(out)) == RUN_FILES                  # and it went with the run


@pytest.mark.parametrize("command", [["evaluate", "--json"], ["predict", "--index", "3"]])
def test_evaluate_and_predict_ignore_a_lock_file(tiny_data, tmp_path, capsys, command):
    out = tmp_path / "run"
    assert run_main(capsys, "train", "--out", out, *FAST).code == 0
    (out / ".barenet.lock").write_text(f"{os.getpid()}\n")
    assert main([command[0], str(out), *command[1:]]) == 0
    assert capsys.readouterr().out.strip()


# 3. Stale temporaries of barenet's own naming are removed under the lock; nothing else.

STALE = [".checkpoint.safetensors.k3j_9abc.tmp", ".config.json.0a1b2c3d.tmp",
         ".model.safetensors.zzzzzzzz.tmp", ".history.json.q1w2e3r4.tmp"]
NOT_OURS = ["notes.tmp", ".checkpoint.safetensors.mine.tmp", ".thesis.tex.abcdefgh.tmp"]


def test_resume_removes_stale_temporaries_of_a_kill_and_nothing_else(tiny_data, tmp_path,
                                                                      capsys):
    out = tmp_path / "run"
    assert run_main(capsys, "train", "--out", out, *FAST).code == 0
    for name in STALE:
        (out / name).write_bytes(b"\0" * 1000)
    for name in NOT_OURS:
        (out / name).write_text("the user's")
    assert run_main(capsys, "train", "--resume", out, "--epochs", "3", "-q").code == 0
    assert set(os.listdir(out)) == RUN_FILES | set(NOT_OURS)
    assert all((out / n).read_text() == "the user's" for n in NOT_OURS)


def test_a_directory_holding_only_stale_temporaries_is_empty(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / STALE[0]).write_bytes(b"\0" * 100)
    assert run_main(capsys, "train", "--out", out, *FAST).code == 0
    assert set(os.listdir(out)) == RUN_FILES


# 4. A run that fails before it starts leaves no directory (and an existing one untouched).

def _fail_in_build_model(monkeypatch):
    import barenet.app.runs as runs

    def build_model(*a, **k):
        raise MemoryError
    monkeypatch.setattr(runs, "build_model", build_model)
    return 1, "out of memory"


def _fail_loading_data(monkeypatch):
    import barenet.data
    from barenet.data import DataError

    def load(*a, **k):
        raise DataError("mnist: train-images: checksum mismatch (a test)")
    monkeypatch.setattr(barenet.data, "load_dataset", load)
    return 1, "checksum mismatch"


def _fail_late_in_config(monkeypatch):
    import barenet.app.runs as runs
    from barenet.config import ConfigError

    def build_optimizer(*a, **k):
        raise ConfigError("optimizer.betas: found late (a test)")
    monkeypatch.setattr(runs, "build_optimizer", build_optimizer)
    return 2, "found late"


@pytest.mark.parametrize("failure", [_fail_in_build_model, _fail_loading_data,
                                     _fail_late_in_config])
@pytest.mark.parametrize("where", ["new", "existing"])
def test_a_run_that_cannot_start_leaves_nothing(tiny_data, tmp_path, capsys, monkeypatch,
                                                failure, where):
    code, words = failure(monkeypatch)
    if where == "new":
        out = tmp_path / "a" / "b" / "run"
    else:
        out = tmp_path / "mine"
        out.mkdir()
    assert_error(run_main(capsys, "train", "--out", out, *FAST), code, words)
    if where == "new":
        assert not (tmp_path / "a").exists()
    else:
        assert out.is_dir() and os.listdir(out) == []


def test_a_new_run_that_diverges_in_epoch_1_says_there_is_no_checkpoint(tiny_data, tmp_path,
                                                                         capsys):
    out = tmp_path / "run"
    done = run_main(capsys, "train", "--out", out, *FAST, "--lr", "1e30")
    assert_error(done, 1, "loss became", "no checkpoint", "lower")
    assert "last good checkpoint" not in done.err
    assert not out.exists()


def test_permission_denied_for_out_is_one_line(tiny_data, tmp_path, capsys, monkeypatch):
    """In process: mkdir refused as for a user without write permission (root ignores
    chmod, so this is the test that runs everywhere; test_signals_disk has a real one)."""
    real = Path.mkdir

    def mkdir(self, *a, **k):
        if self.name == "forbidden":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    out = tmp_path / "forbidden" / "run"
    assert_error(run_main(capsys, "train", "--out", out, *FAST), 2, "permission denied",
                 "choose a directory you can write to")
    assert not (tmp_path / "forbidden").exists()


def test_out_below_a_file_is_one_line(tiny_data, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert_error(run_main(capsys, "train", "--out", tmp_path / "afile" / "run", *FAST), 2,
                 "afile")
    assert (tmp_path / "afile").read_text() == "x"


# 5. --resume after config.json was edited: one line naming the difference, nothing touched.

@pytest.mark.parametrize("edit, key", [
    (lambda c: c["model"].update(hidden=[24]), "model.hidden"),
    (lambda c: c["optimizer"].update(name="adam"), "optimizer.name"),
    (lambda c: c["optimizer"].update(lr=0.5), "optimizer.lr"),
    (lambda c: c["model"].update(activation="Tanh"), "model.activation"),
])
def test_resume_after_config_json_was_edited(tiny_data, tmp_path, capsys, edit, key):
    out = tmp_path / "run"
    assert run_main(capsys, "train", "--out", out, *FAST).code == 0
    path = out / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))
    before = snapshot(out)
    assert_error(run_main(capsys, "train", "--resume", out, "--epochs", "3", "-q"), 2,
                 "config.json", "changed", key)
    assert snapshot(out) == before


# 2. The lock: two real processes on one --out, started together.

def _wait_all(procs, timeout=120):
    return [(p.wait(timeout=timeout), *p.communicate()) for p in procs]


def test_two_trains_started_together_one_wins_the_directory_is_one_run(tmp_path):
    """Whichever comes second is refused: "in use" while the first holds the lock, "already
    holds a run" once it has finished; never two runs mixed in one directory."""
    slower = {"BARENET_FAKE_N": "2000"}
    args = ["--epochs", "3", "--batch-size", "100", "--set", "data.validation=100",
            "--set", "schedule.name='none'", "-q"]
    for attempt in range(3):
        out = tmp_path / f"run{attempt}"
        procs = [popen("train", "--out", out, *args, "--seed", seed, "--lr", lr, env=slower)
                 for seed, lr in (("1", "0.05"), ("2", "0.07"))]
        results = _wait_all(procs)
        assert sorted(code for code, _, _ in results) == [0, 2], results
        loser = next(err for code, _, err in results if code == 2)
        line = assert_error(Done(2, "", loser), 2, str(out))
        assert "in use by another barenet process (pid" in line or "already holds a run" in line
        config = json.loads((out / "config.json").read_text())
        _, meta = load_arrays(out / "model.safetensors")
        _, ck = load_arrays(out / "checkpoint.safetensors")
        seeds = {config["training"]["seed"], meta["config"]["training"]["seed"],
                 ck["config"]["training"]["seed"]}
        lrs = {config["optimizer"]["lr"], meta["config"]["optimizer"]["lr"],
               ck["config"]["optimizer"]["lr"]}
        assert len(seeds) == 1 and len(lrs) == 1, (seeds, lrs)
        assert set(os.listdir(out)) == RUN_FILES
        assert [r["epoch"] for r in json.loads((out / "history.json").read_text())] == [1, 2, 3]
    done = cli("train", "--resume", out, "--epochs", "4", "-q", env=slower)
    assert done.code == 0, done.err
    assert [r["epoch"] for r in json.loads((out / "history.json").read_text())] == [1, 2, 3, 4]


SLOW_LOAD = """
import sys, time, os
sys.path.insert(0, {here!r})
import fake_barenet, barenet.data
fake = barenet.data.load_dataset
def slow(*a, **k):
    open({mark!r}, "w").close()
    time.sleep(float(os.environ.get("SLOW", "30")))
    return fake(*a, **k)
barenet.data.load_dataset = slow
import barenet.app.runs
barenet.app.runs._write_report = lambda out: None
from barenet.app.cli import run
sys.argv[0] = "barenet"
run()
"""


def _start_slow(tmp_path, *args, slow="30"):
    import subprocess
    import sys
    mark = tmp_path / "loading"
    script = SLOW_LOAD.format(here=str(Path(__file__).parent), mark=str(mark))
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)],
                            env={**os.environ, "SLOW": slow}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not mark.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    return proc


@pytest.mark.parametrize("second", ["train", "resume"])
def test_a_second_process_while_the_first_loads_data_is_refused(tmp_path, second):
    out = tmp_path / "run"
    first = _start_slow(tmp_path, "train", "--out", out, *FAST, slow="1.5")
    args = (["train", "--out", out, *FAST] if second == "train"
            else ["train", "--resume", out, "-q"])
    assert_error(cli(*args), 2, "in use by another barenet process", f"pid {first.pid}")
    code, _, err = _wait_all([first])[0]
    assert code == 0, err
    assert set(os.listdir(out)) == RUN_FILES
    a, _ = load_arrays(out / "model.safetensors")
    assert all(np.isfinite(v).all() for v in a.values())


def test_resume_of_a_run_stopped_before_its_first_checkpoint_starts_it_again(tiny_data,
                                                                             tmp_path, capsys):
    """kill -9 in epoch 1 leaves config.json (and progress.json) but no checkpoint."""
    done, straight = tmp_path / "done", tmp_path / "straight"
    assert run_main(capsys, "train", "--out", straight, *FAST).code == 0
    shutil.copytree(straight, done)
    for name in ("checkpoint.safetensors", "model.safetensors", "metrics.json",
                 "history.json"):
        (done / name).unlink()
    (done / "progress.json").write_text('{"state": "training", "epoch": 1}')
    result = run_main(capsys, "train", "--resume", done)
    assert result.code == 0, result.err
    assert "starts again from epoch 1" in result.err
    a, _ = load_arrays(done / "model.safetensors")
    b, _ = load_arrays(straight / "model.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in b)
    assert set(os.listdir(done)) == RUN_FILES


# 3. Other writers of a run directory take the same lock; a damaged config.json is one line.

def test_report_refuses_a_run_in_use(tiny_data, tmp_path, capsys):
    """`barenet report` writes report.html into the run: not while another process holds it."""
    import subprocess
    import sys
    out = tmp_path / "run"
    assert run_main(capsys, "train", "--out", out, *FAST).code == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
         str(out / ".barenet.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(out)
        assert_error(run_main(capsys, "report", out), 2, "in use by another barenet process")
        assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("text, words", [
    ("[" * 5000 + "]" * 5000, ["config.json", "nested too deeply"]),
    ("[1, 2]", ["config.json", "object"]),
    ("{not json", ["config.json", "unreadable"]),
])
def test_resume_with_a_damaged_config_json_is_one_line(tiny_data, tmp_path, capsys, text,
                                                        words):
    out = tmp_path / "run"
    assert run_main(capsys, "train", "--out", out, *FAST).code == 0
    (out / "config.json").write_text(text)
    before = snapshot(out)
    assert_error(run_main(capsys, "train", "--resume", out, "--epochs", "3", "-q"), 2, *words)
    assert snapshot(out) == before
