"""`barenet compare`: config differences, results table and overlaid curves."""

import json

import pytest

from barenet.app.cli import main
from barenet.app.compare import comparison_rows, config_differences


@pytest.fixture
def two_runs(tiny_data, tmp_path, monkeypatch):
    import barenet.app.runs as runs
    monkeypatch.setattr(runs, "_write_report", lambda out: None)    # not what is tested here
    a, b = tmp_path / "lr-high", tmp_path / "lr-low"
    common = ["--set", "model.hidden=[32]", "--epochs", "2", "-q"]
    assert main(["train", *common, "--out", str(a)]) == 0
    assert main(["train", *common, "--lr", "0.01", "--out", str(b)]) == 0
    return a, b


def test_compare_prints_differences_and_writes_curves(two_runs, tmp_path, capsys):
    out = tmp_path / "curves.png"
    assert main(["compare", *map(str, two_runs), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "optimizer.lr" in text and "0.01" in text
    assert "model.hidden" not in text                      # equal in both: not a difference
    for row in ("best val accuracy", "test accuracy", "training time", "lr-high", "lr-low"):
        assert row in text
    assert out.read_bytes().startswith(b"\x89PNG")


def test_config_differences_and_rows():
    configs = [{"optimizer": {"lr": 0.1, "name": "sgd"}, "model": {"hidden": [32]}},
               {"optimizer": {"lr": 0.01, "name": "sgd"}, "model": {"hidden": [32]},
                "extra": {"flag": True}}]
    assert config_differences(configs) == {"optimizer.lr": [0.1, 0.01],
                                           "extra.flag": [None, True]}
    history = [{"epoch": 1, "val_accuracy": 0.5, "time": 1.0},
               {"epoch": 2, "val_accuracy": 0.7, "time": 2.0},
               {"epoch": 3, "val_accuracy": 0.6, "time": 1.5}]
    (row,) = comparison_rows([{"history": history, "metrics": {"test_accuracy": 0.65}}])
    assert row == {"epochs": 3, "best_val_accuracy": 0.7, "best_epoch": 2,
                   "test_accuracy": 0.65, "seconds": 4.5}


def test_compare_a_directory_that_is_not_a_run(two_runs, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", str(two_runs[0]), str(empty), "--out",
                 str(tmp_path / "x.png")]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_runs_with_the_same_name_are_told_apart_by_path(two_runs, tmp_path, capsys):
    import shutil
    twin = tmp_path / "elsewhere" / two_runs[0].name
    shutil.copytree(two_runs[0], twin)
    assert main(["compare", str(two_runs[0]), str(twin), "--out",
                 str(tmp_path / "c.png")]) == 0
    text = capsys.readouterr().out
    assert "identical configurations" in text and "elsewhere/lr-high" in text
    assert json.loads((twin / "config.json").read_text())["optimizer"]["lr"] == 0.1
