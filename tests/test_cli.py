"""The CLI contract via main([...]): exit codes, run directory, model files, bad input."""

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from barenet.app.cli import main
from barenet.serialize import load_arrays

FAST = ["--set", "model.hidden=[32]", "--epochs", "3", "--batch-size", "50"]


@pytest.fixture
def run_dir(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert main(["train", *FAST, "--out", str(out), "-q"]) == 0
    return out


def test_train_writes_run_directory(run_dir):
    for name in ("model.safetensors", "config.json", "history.json", "metrics.json",
                 "checkpoint.safetensors"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.9 and "test_loss" in metrics
    history = json.loads((run_dir / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["hidden"] == [32] and config["training"]["epochs"] == 3
    assert not list(run_dir.glob("*.tmp"))


def test_same_command_same_numbers(tiny_data, tmp_path):
    for name in ("a", "b"):
        assert main(["train", *FAST, "--seed", "5", "--out", str(tmp_path / name), "-q"]) == 0
    a = json.loads((tmp_path / "a" / "history.json").read_text())
    b = json.loads((tmp_path / "b" / "history.json").read_text())
    strip = [{k: v for k, v in row.items() if k != "time"} for row in a]
    assert strip == [{k: v for k, v in row.items() if k != "time"} for row in b]


def test_refuses_to_overwrite_a_run(run_dir, capsys):
    assert main(["train", *FAST, "--out", str(run_dir), "-q"]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_evaluate_json(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["per_class_accuracy"]) == 10
    assert np.array(out["confusion_matrix"]).shape == (10, 10)
    assert np.array(out["confusion_matrix"]).sum() == 200
    assert out["accuracy"] > 0.9


def test_evaluate_text_table(run_dir, capsys):
    assert main(["evaluate", str(run_dir / "model.safetensors")]) == 0
    assert "confusion matrix" in capsys.readouterr().out


def test_predict_by_index_json(run_dir, tiny_data, capsys):
    assert main(["predict", str(run_dir), "--index", "0", "--index", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    labels = tiny_data[1][1]
    assert [o["label"] for o in out] == [int(labels[0]), int(labels[3])]
    assert all(len(o["probabilities"]) == 10 for o in out)
    assert sum(out[0]["probabilities"]) == pytest.approx(1.0, abs=1e-4)


def test_predict_image_file(run_dir, tiny_data, tmp_path, capsys):
    from PIL import Image

    # Dark-on-light, large: the preprocessing must invert, crop and rescale it.
    digit = tiny_data[1][0][0]
    big = Image.fromarray(255 - digit).resize((280, 280), Image.NEAREST)
    path = tmp_path / "digit.png"
    big.save(path)
    assert main(["predict", str(run_dir), str(path)]) == 0
    assert "top-3" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["predict", "RUN", "--index", "100000"], "out of range"),
    (["predict", "RUN"], "--index"),
    (["predict", "RUN", "missing.png"], "no such image"),
    (["evaluate", "nowhere/model.safetensors"], "no such run directory or model file"),
    (["train", "--epochs", "0"], "training.epochs"),
    (["train", "--set", "optimizer.lr=-1"], "optimizer.lr"),
    (["train", "--set", "model.dropout=1"], "model.dropout"),
    (["train", "--set", "model.hidden=[-3]"], "model.hidden"),
    (["train", "--set", "optimizer.learning_rate=1"], "optimizer.learning_rate"),
    (["train", "--config", "nowhere.toml"], "not found"),
    (["frobnicate"], "No such command"),
])
def test_bad_input_is_one_line_exit_2(run_dir, args, message, capsys):
    args = [str(run_dir) if a == "RUN" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert "Traceback" not in err


def test_bad_image_file(run_dir, tmp_path, capsys):
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    assert main(["predict", str(run_dir), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err


class Boom:
    ran = False

    def __reduce__(self):
        return (exec, ("import barenet.app; barenet.app.PWNED = True",))


@pytest.mark.parametrize("content", [
    pickle.dumps(Boom()),
    b"",
    b"\x00" * 3,
    os.urandom(200),
    b"\xff" * 8 + b"{}",
])
def test_evaluate_refuses_non_models_without_running_them(tmp_path, content, capsys):
    import barenet.app

    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a barenet model" in err
    assert not hasattr(barenet.app, "PWNED")


def test_truncated_and_mismatched_model_files(run_dir, tmp_path, capsys):
    blob = (run_dir / "model.safetensors").read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(blob[:len(blob) // 2])
    assert main(["evaluate", str(truncated)]) == 2
    # Valid file whose arrays don't fit the architecture it declares.
    from barenet.serialize import save_arrays
    arrays, meta = load_arrays(run_dir / "model.safetensors")
    arrays["0.W"] = np.zeros((3, 3), np.float32)
    wrong = tmp_path / "wrong.safetensors"
    save_arrays(wrong, arrays, meta)
    assert main(["evaluate", str(wrong)]) == 2
    meta["format_version"] = 99
    newer = tmp_path / "newer.safetensors"
    save_arrays(newer, *load_arrays(run_dir / "model.safetensors")[:1], meta)
    assert main(["evaluate", str(newer)]) == 2
    err = capsys.readouterr().err
    assert "damaged or truncated" in err and "shape" in err and "upgrade barenet" in err


def test_model_file_round_trip(run_dir, tiny_data):
    from barenet.serialize import load_model, save_model

    model, meta = load_model(run_dir / "model.safetensors")
    x = tiny_data[1][0]
    before = model.predict_proba(x)
    path = run_dir / "copy.safetensors"
    save_model(path, model, note="copy")
    again, meta2 = load_model(path)
    assert np.array_equal(before, again.predict_proba(x))
    assert meta2["note"] == "copy" and meta2["architecture"] == meta["architecture"]
    assert meta["config"]["training"]["epochs"] == 3 and "test_accuracy" in meta["metrics"]


SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    import barenet.data
    from conftest import synthetic_digits
    from barenet.training import Callback
    from barenet.app import runs
    data = synthetic_digits()
    barenet.data.load_dataset = lambda *a, **k: data

    class Slow(Callback):          # slow batches, so the kill lands mid-epoch
        def on_batch_end(self, batch, logs):
            time.sleep(0.02)

    from barenet.config import load_config
    config = load_config(None, {sets!r})
    runs.train_run(config, {out!r}, callbacks=[Slow()])
""")


def test_kill_9_mid_epoch_then_resume_gives_identical_weights(tiny_data, tmp_path):
    sets = ["model.hidden=[32]", "model.dropout=0.3", "training.epochs=6",
            "training.batch_size=50", "schedule.name='cosine'"]
    killed = tmp_path / "killed"
    script = SCRIPT.format(tests=str(Path(__file__).parent), sets=sets, out=str(killed))
    proc = subprocess.Popen([sys.executable, "-c", script])
    checkpoint = killed / "checkpoint.safetensors"
    deadline = time.time() + 60
    while time.time() < deadline:               # wait for the end of epoch 2, then kill
        if checkpoint.exists() and load_arrays(checkpoint)[1]["checkpoint"]["epoch"] >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    epoch_at_kill = load_arrays(checkpoint)[1]["checkpoint"]["epoch"]
    assert 2 <= epoch_at_kill < 6 and not (killed / "model.safetensors").exists()

    assert main(["train", "--resume", str(killed), "-q"]) == 0
    straight = tmp_path / "straight"
    assert main(["train", *[a for s in sets for a in ("--set", s)], "--out", str(straight),
                 "-q"]) == 0
    a, _ = load_arrays(killed / "model.safetensors")
    b, _ = load_arrays(straight / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    ha = json.loads((killed / "history.json").read_text())
    assert [r["epoch"] for r in ha] == [1, 2, 3, 4, 5, 6]


def test_resume_without_checkpoint(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "is this a run directory" in capsys.readouterr().err


def test_seeds_report_mean_and_spread(tiny_data, tmp_path, capsys):
    out = tmp_path / "multi"
    assert main(["train", *FAST, "--seeds", "3", "--out", str(out), "-q"]) == 0
    summary = json.loads((out / "seeds.json").read_text())
    assert [s["seed"] for s in summary["seeds"]] == [0, 1, 2]
    accs = [s["test_accuracy"] for s in summary["seeds"]]
    assert summary["test_accuracy_mean"] == pytest.approx(np.mean(accs))
    assert summary["test_accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    assert all((out / f"seed-{k}" / "model.safetensors").is_file() for k in range(3))
    assert "±" in capsys.readouterr().out
