"""Garbage on the command line of every command: one line, exit 2, nothing written.

In-process (`main([...])` on the synthetic digits): each case runs in an empty working
directory beside a folder of inputs (a text file, an empty folder, a finished run), and the
test checks that no file appeared or changed anywhere there.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from barenet.app.cli import main
from conftest import Done, assert_error, snapshot  # tests/reliability/conftest.py

BIG = "1" + "0" * 30


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """text.txt, empty/, a finished run (run/), a sweep spec; made once, never written to."""
    import importlib.util

    import barenet.app.runs as runs
    import barenet.data
    root = tmp_path_factory.mktemp("inputs")
    (root / "text.txt").write_text("not a model, not a run\n")
    (root / "empty").mkdir()
    (root / "spec.toml").write_text(
        'base = "base.toml"\ntrials = 2\n[params]\n"optimizer.lr" = [0.01, 0.1]\n')
    (root / "base.toml").write_text("[data]\nvalidation = 0.1\n[model]\nhidden = [8]\n")
    spec = importlib.util.spec_from_file_location(
        "tests_root_conftest", Path(__file__).parents[1] / "conftest.py")
    root_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root_conftest)
    data = root_conftest.synthetic_digits()
    saved = barenet.data.load_dataset, runs._write_report
    barenet.data.load_dataset = lambda *a, **k: data
    runs._write_report = lambda out: None
    try:
        assert main(["train", "--out", str(root / "run"), "--epochs", "1", "--quiet",
                     "--set", "model.hidden=[8]"]) == 0
    finally:
        barenet.data.load_dataset, runs._write_report = saved
    return root


def _run(capsys, args) -> Done:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return Done(code, out, err)


# (id, args with {in} for the inputs folder, words the error line must hold)
CASES = [
    # train
    ("train-epochs-0", ["train", "--epochs", "0"], ["training.epochs", "> 0"]),
    ("train-epochs-negative", ["train", "--epochs", "-3"], ["training.epochs"]),
    ("train-epochs-huge", ["train", "--epochs", BIG], ["training.epochs", "at most"]),
    ("train-batch-negative", ["train", "--batch-size", "-1"], ["training.batch_size"]),
    ("train-lr-nan", ["train", "--lr", "nan"], ["optimizer.lr", "finite"]),
    ("train-lr-inf", ["train", "--lr", "inf"], ["optimizer.lr", "finite"]),
    ("train-lr-negative", ["train", "--lr", "-0.1"], ["optimizer.lr", "> 0"]),
    ("train-lr-text", ["train", "--lr", "fast"], ["--lr"]),
    ("train-seed-negative", ["train", "--seed", "-1"], ["training.seed"]),
    ("train-seeds-0", ["train", "--seeds", "0"], ["--seeds"]),
    ("train-config-missing", ["train", "--config", "{in}/nope.toml"], ["nope.toml", "not found"]),
    ("train-config-dir", ["train", "--config", "{in}/empty"], ["--config", "directory"]),
    ("train-config-empty-name", ["train", "--config", ""], ["config"]),
    ("train-config-not-toml", ["train", "--config", "{in}/text.txt"], ["not valid toml"]),
    ("train-set-no-equals", ["train", "--set", "model.hidden"], ["section.key=value"]),
    ("train-set-empty", ["train", "--set", ""], ["section.key=value"]),
    ("train-set-unknown-section", ["train", "--set", "modle.hidden=[3]"], ["modle"]),
    ("train-set-unknown-key", ["train", "--set", "model.widht=3"], ["model.widht"]),
    ("train-set-bool-for-int", ["train", "--set", "training.epochs=true"],
     ["training.epochs", "integer"]),
    ("train-set-huge-hidden", ["train", "--set", "model.hidden=[1000000000]"],
     ["model.hidden", "needs at least", "available"]),
    ("train-set-deep", ["train", "--set", "model.hidden=" + "[" * 3000 + "]" * 3000],
     ["nested too deeply"]),
    ("train-dataset-unknown", ["train", "--dataset", "cifar"], ["--dataset"]),
    ("train-data-dir-is-file", ["train", "--data-dir", "{in}/text.txt"], ["--data-dir"]),
    ("train-out-is-file", ["train", "--out", "{in}/text.txt", "--quiet"], ["is a file"]),
    ("train-resume-missing", ["train", "--resume", "{in}/nope"], ["nope"]),
    ("train-resume-file", ["train", "--resume", "{in}/text.txt"], ["text.txt"]),
    ("train-resume-not-run", ["train", "--resume", "{in}/empty"], ["empty"]),
    ("train-resume-with-set", ["train", "--resume", "{in}/run", "--set", "optimizer.lr=1"],
     ["--resume"]),
    # evaluate / predict
    ("evaluate-missing", ["evaluate", "{in}/nope"], ["nope"]),
    ("evaluate-text-file", ["evaluate", "{in}/text.txt"], ["text.txt"]),
    ("evaluate-empty-dir", ["evaluate", "{in}/empty"], ["empty"]),
    ("evaluate-data-dir-file", ["evaluate", "{in}/run", "--data-dir", "{in}/text.txt"],
     ["--data-dir"]),
    ("predict-nothing", ["predict", "{in}/run"], ["--index"]),
    ("predict-index-negative", ["predict", "{in}/run", "--index", "-1"], ["--index", "negative"]),
    ("predict-index-huge", ["predict", "{in}/run", "--index", BIG], ["--index", "out of range"]),
    ("predict-index-text", ["predict", "{in}/run", "--index", "first"], ["--index"]),
    ("predict-image-missing", ["predict", "{in}/run", "{in}/nope.png"], ["nope.png"]),
    ("predict-image-is-dir", ["predict", "{in}/run", "{in}/empty"], ["empty"]),
    ("predict-model-missing", ["predict", "{in}/nope", "--index", "0"], ["nope"]),
    # gradcheck, lr-find, augment-preview
    pytest.param("gradcheck-threshold-nan", ["gradcheck", "--threshold", "nan"],
                 ["--threshold"]),
    pytest.param("gradcheck-threshold-negative", ["gradcheck", "--threshold", "-1"],
                 ["--threshold"]),
    pytest.param("gradcheck-seed-negative", ["gradcheck", "--seed", "-1"], ["--seed"]),
    ("lr-find-start-0", ["lr-find", "--start", "0"], ["--start"]),
    ("lr-find-end-nan", ["lr-find", "--end", "nan"], ["--end"]),
    ("lr-find-start-above-end", ["lr-find", "--start", "1", "--end", "0.01"], ["--start"]),
    ("lr-find-steps-2", ["lr-find", "--steps", "2"], ["--steps"]),
    ("lr-find-out-dir", ["lr-find", "--out", "{in}/empty"], ["--out"]),
    ("lr-find-set-bad", ["lr-find", "--set", "optimizer.lr"], ["section.key=value"]),
    ("augment-digits-0", ["augment-preview", "--digits", "0"], ["--digits"]),
    ("augment-copies-huge", ["augment-preview", "--copies", BIG], ["--copies"]),
    ("augment-set-nan", ["augment-preview", "--set", "augment.rotate=nan"],
     ["augment.rotate", "finite"]),
    ("augment-set-huge", ["augment-preview", "--set", "augment.shift=1e300"], ["augment.shift"]),
    ("augment-out-dir", ["augment-preview", "--out", "{in}/empty"], ["--out"]),
    pytest.param("augment-seed-negative", ["augment-preview", "--seed", "-5", "--set",
                                           "augment.rotate=10"], ["--seed"]),
    # report, compare, ensemble, models, sweep
    ("report-missing", ["report", "{in}/nope"], ["nope"]),
    ("report-file", ["report", "{in}/text.txt"], ["text.txt"]),
    ("report-empty-dir", ["report", "{in}/empty"], ["empty"]),
    ("report-png-dir-file", ["report", "{in}/run", "--png-dir", "{in}/text.txt"], ["--png-dir"]),
    ("compare-missing", ["compare", "{in}/nope"], ["nope"]),
    ("compare-not-run", ["compare", "{in}/empty", "{in}/run"], ["empty", "config.json"]),
    ("compare-out-empty", ["compare", "{in}/run", "--out", ""], ["--out"]),
    ("compare-out-no-folder", ["compare", "{in}/run", "--out", "{in}/nope/c.png"], ["--out"]),
    ("ensemble-no-runs", ["ensemble", "--out", "ens"], ["runs"]),
    ("ensemble-missing", ["ensemble", "{in}/nope", "{in}/run", "--out", "ens"], ["nope"]),
    ("ensemble-out-file", ["ensemble", "{in}/run", "--out", "{in}/text.txt"], ["--out"]),
    ("models-unknown-option", ["models", "--bogus"], ["--bogus"]),
    # robustness, embed, attack (issue 19)
    ("robustness-missing", ["robustness", "{in}/nope"], ["nope"]),
    ("robustness-images-0", ["robustness", "{in}/run", "--images", "0"], ["--images"]),
    ("robustness-corruptions-bad", ["robustness", "{in}/run", "--corruptions", "smudge"],
     ["--corruptions", "smudge"]),
    ("robustness-corruptions-empty", ["robustness", "{in}/run", "--corruptions", ","],
     ["--corruptions"]),
    ("robustness-out-file", ["robustness", "{in}/run", "--out", "{in}/text.txt"], ["--out"]),
    ("embed-missing", ["embed", "{in}/nope"], ["nope"]),
    ("embed-layer-too-big", ["embed", "{in}/run", "--layer", BIG], ["--layer"]),
    ("embed-layer-text", ["embed", "{in}/run", "--layer", "last"], ["--layer"]),
    ("embed-method-bad", ["embed", "{in}/run", "--method", "umap"], ["--method"]),
    ("embed-out-dir", ["embed", "{in}/run", "--out", "{in}/empty"], ["--out"]),
    ("embed-out-no-folder", ["embed", "{in}/run", "--out", "{in}/nope/e.png"], ["--out"]),
    ("attack-eps-nan", ["attack", "{in}/run", "--eps", "nan"], ["--eps", "finite"]),
    ("attack-eps-big", ["attack", "{in}/run", "--eps", "2"], ["--eps"]),
    ("attack-index-negative", ["attack", "{in}/run", "--index", "-1"], ["--index"]),
    ("attack-steps-0", ["attack", "{in}/run", "--steps", "0"], ["--steps"]),
    ("attack-out-no-folder", ["attack", "{in}/run", "--out", "{in}/nope/a.png"], ["--out"]),
    ("predict-reject-nan", ["predict", "{in}/run", "--index", "0", "--reject", "nan"],
     ["--reject", "finite"]),
    ("evaluate-reject-big", ["evaluate", "{in}/run", "--reject", "1.5"], ["--reject"]),
    ("export-no-onnx", ["export", "{in}/run"], ["--onnx"]),
    ("export-model-missing", ["export", "{in}/nope", "--onnx", "m.onnx"], ["nope"]),
    ("export-onnx-is-dir", ["export", "{in}/run", "--onnx", "{in}/empty"], ["--onnx"]),
    ("sweep-spec-missing", ["sweep", "{in}/nope.toml"], ["nope.toml"]),
    ("sweep-spec-dir", ["sweep", "{in}/empty"], ["directory"]),
    ("sweep-trials-0", ["sweep", "{in}/spec.toml", "--trials", "0"], ["--trials"]),
    ("sweep-jobs-0", ["sweep", "{in}/spec.toml", "--jobs", "0"], ["--jobs"]),
    ("sweep-timeout-negative", ["sweep", "{in}/spec.toml", "--timeout", "-1"], ["--timeout"]),
    ("sweep-out-file", ["sweep", "{in}/spec.toml", "--out", "{in}/text.txt"], ["--out"]),
]


def _id(case) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


@pytest.mark.parametrize("name,args,words", CASES, ids=[_id(c) for c in CASES])
def test_bad_argument_is_one_line_exit_2(name, args, words, inputs, tmp_path, monkeypatch,
                                         capsys, tiny_data):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = snapshot(inputs)
    done = _run(capsys, [a.replace("{in}", str(inputs)) for a in args])
    assert_error(done, 2, *words)
    assert snapshot(inputs) == before, "an input file changed"
    assert list(work.iterdir()) == [], f"left behind: {list(work.iterdir())}"


def test_every_command_is_swept():
    """A new command gets a row above: the sweep covers every command the CLI lists."""
    from barenet.app.cli import cli
    swept = {(c.values if hasattr(c, "values") else c)[1][0] for c in CASES}
    skipped = {"serve", "explore", "dashboard", "sweep-report"}    # other suites own them
    import click
    listed = set(cli.list_commands(click.Context(cli))) - skipped
    assert listed <= swept, sorted(listed - swept)


def test_sweep_spec_with_true_for_trials_is_refused(tmp_path, capsys, monkeypatch):
    """`trials = true` is not one trial: True is an int in Python, not in a spec."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.toml").write_text('trials = true\n[config.data]\nvalidation = 0.1\n'
                                        '[params]\n"optimizer.lr" = [0.01, 0.1]\n')
    assert_error(_run(capsys, ["sweep", "spec.toml"]), 2, "trials")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.toml"]


@pytest.mark.parametrize("depth", [50, 5000])
def test_sweep_spec_nested_deep_is_one_line(tmp_path, capsys, monkeypatch, depth):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.toml").write_text("trials = 2\n[params]\n\"model.hidden\" = "
                                        + "[" * depth + "]" * depth + "\n")
    done = _run(capsys, ["sweep", "spec.toml"])
    assert_error(done, 2, "model.hidden" if depth < 100 else "nested too deeply")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.toml"]


def test_sizes_in_messages_stay_short(capsys):
    done = _run(capsys, ["train", "--set", "model.hidden=[" + "9" * 4000 + "]"])
    line = assert_error(done, 2, "model.hidden")
    assert len(line) < 300 and not math.isnan(len(line))
    assert json.dumps(line)


# compare: the run's own JSON files (the issue: a non-number in history.json -> ValueError).

@pytest.mark.parametrize("name,text,words", [
    ("history.json", '[{"epoch": 1, "val_accuracy": "high"}]', ["val_accuracy", "'high'"]),
    ("history.json", '[{"epoch": 1, "loss": null}]', ["'loss'", "none"]),
    ("history.json", '[{"epoch": 1, "val_accuracy": NaN}]', ["val_accuracy", "nan"]),
    ("history.json", '[{"epoch": 1, "accuracy": [[0.5]]}]', ["'accuracy'"]),
    ("history.json", '[{"epoch": 1, "time": "1 s"}]', ["'time'"]),
    ("history.json", '{"epoch": 1}', ["list of epochs"]),
    ("history.json", "[1, 2]", ["epoch entry 0"]),
    ("history.json", "[" * 100_000 + "]" * 100_000, ["nested too deeply"]),
    ("history.json", "not json", ["not valid json"]),
    ("history.json", "[" + "9" * 5000 + "]", ["not valid json"]),
    ("metrics.json", '{"test_accuracy": "99 %"}', ["test_accuracy"]),
    ("metrics.json", "[1]", ["json object"]),
    ("config.json", "[1]", ["json object"]),
], ids=["str", "null", "nan", "nested-list", "time-str", "not-a-list", "rows-not-tables",
        "deep", "not-json", "5000-digits", "metrics-str", "metrics-list", "config-list"])
def test_compare_names_file_and_key(name, text, words, inputs, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(inputs / "run", bad)
    (bad / name).write_text(text)
    before = snapshot(tmp_path)
    done = _run(capsys, ["compare", inputs / "run", bad, "--out", tmp_path / "c.png"])
    assert_error(done, 2, str(bad / name), *words)
    assert snapshot(tmp_path) == before
