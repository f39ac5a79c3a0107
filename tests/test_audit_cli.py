"""What the new-user audit of issue 14 found (item 5), one test or more per finding.

Each test failed before its fix; the comment above it says how.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from barenet.app.cli import main

TINY = ["--set", "model.hidden=[32]", "--batch-size", "50", "-q"]


def train(out: Path, *args: str) -> Path:
    assert main(["train", *TINY, "--epochs", "2", *args, "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_dir(tiny_data, tmp_path):
    return train(tmp_path / "run")


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# (a) The web page's model card said "augmentation: erase_area 0.3" for every run: the page
# listed every non-zero augment key, and erase_area (the size of an erased rectangle) is 0.3
# even when nothing is erased. Before: no `augmentation` in /api/model; the page's summary
# function printed "erase_area 0.3".


def model_card(run: Path) -> dict:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from barenet.app.server import create_app
    from barenet.serialize import load_model

    model, meta = load_model(run / "model.safetensors")
    with TestClient(create_app(model, meta)) as client:
        return client.get("/api/model").json()


def page_config_summary(card: dict) -> dict:
    """The rows the page's own JavaScript (static/app.js) shows under "Training"."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed: the page's summary function is not run")
    from barenet.app.server import STATIC

    source = (STATIC / "app.js").read_text()
    functions = [re.search(rf"^function {name}\(.*?^}}$", source, re.S | re.M).group(0)
                 for name in ("fmt", "configSummary")]
    script = "\n".join([*functions, f"const card = {json.dumps(card)};",
                        "console.log(JSON.stringify(configSummary(card.config, card)));"])
    done = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_model_card_says_no_augmentation_when_off(run_dir):
    card = model_card(run_dir)
    assert card["augmentation"] == "none"
    assert page_config_summary(card)["augmentation"] == "none"


def test_model_card_names_only_the_augmentation_in_use(tiny_data, tmp_path):
    run = train(tmp_path / "aug", "--set", "augment.rotate=10", "--set", "augment.elastic_sigma=5")
    card = model_card(run)
    assert card["augmentation"] == "rotate 10°"          # no erase_area, no elastic_sigma
    assert page_config_summary(card)["augmentation"] == "rotate 10°"
    run = train(tmp_path / "erase", "--set", "augment.erase=0.5")
    assert model_card(run)["augmentation"] == "erase p 0.5 (up to 0.3 of the image)"


# (b) `compare` without matplotlib printed "pip install 'barenet'": rich read "[plots]" as
# markup and dropped it.


def test_compare_without_matplotlib_prints_the_whole_install_hint(tiny_data, tmp_path,
                                                                  monkeypatch, capsys):
    a, b = train(tmp_path / "a"), train(tmp_path / "b[lr]", "--lr", "0.01")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "pip install 'barenet[plots]'" in out
    assert "b[lr]" in out                                  # run names are not markup either
    assert not (tmp_path / "c.png").exists()


def test_menu_shows_paths_with_brackets(tmp_path, monkeypatch):
    import io

    from rich.console import Console

    from barenet.app.menu import run_menu

    monkeypatch.chdir(tmp_path)                           # no ./runs here
    answers = iter(["2", "nowhere[x]", "q"])
    screen = Console(file=io.StringIO(), width=200)
    assert run_menu(main, ask=lambda prompt, default=None: next(answers),
                    echo=lambda text="": screen.print(text)) == 0
    assert "nowhere[x]: no such run directory" in screen.file.getvalue()


# (c) One blank image aborted the whole `predict` batch, naming no file.


def png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def test_predict_reports_each_bad_file_and_goes_on(run_dir, tiny_data, tmp_path, capsys):
    (_, _), (x_test, _) = tiny_data
    blank = png(tmp_path / "blank.png", np.full((28, 28), 255))
    good = png(tmp_path / "good.png", 255 - x_test[0])    # dark ink on white, like a scan
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    missing = tmp_path / "missing.png"
    args = ["predict", str(run_dir), str(blank), str(good), str(junk), str(missing)]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert [line.split(" -> ")[0] for line in out.splitlines()] == [str(good)]
    lines = err.strip().splitlines()
    assert len(lines) == 4 and "Traceback" not in err
    assert str(blank) in lines[0] and "no digit found" in lines[0]
    assert str(junk) in lines[1] and "not an image" in lines[1]
    assert all(line.count(str(tmp_path)) == 1 for line in lines[:3])   # named once
    assert str(missing) in lines[2] and "no such" in lines[2]
    assert "3 of 4 images could not be classified" in lines[3]

    assert main([*args, "--json"]) == 2
    out, _ = capsys.readouterr()
    rows = json.loads(out)
    assert [r["input"] for r in rows] == [str(blank), str(good), str(junk), str(missing)]
    assert "no digit found" in rows[0]["error"] and "label" not in rows[0]
    assert 0 <= rows[1]["label"] <= 9 and "error" not in rows[1]


def test_predict_all_good_files_exit_0(run_dir, tiny_data, tmp_path, capsys):
    (_, _), (x_test, _) = tiny_data
    good = png(tmp_path / "good.png", 255 - x_test[1])
    assert main(["predict", str(run_dir), str(good), "--index", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


# (d) `train --resume RUN --epochs 10` ignored --epochs (and --lr, --batch-size, --seed,
# --dataset) without a word.


def test_resume_extends_epochs_exactly_as_a_longer_run(tiny_data, tmp_path, capsys):
    # A schedule that does not depend on the number of epochs: two epochs then two more must
    # be the four-epoch run, bit for bit.
    step = ["--set", "schedule.name=step", "--set", "schedule.milestones=[3]"]
    short = train(tmp_path / "short", *step)
    assert main(["train", "--resume", str(short), "--epochs", "4", "-q"]) == 0
    whole = tmp_path / "whole"
    assert main(["train", *TINY, *step, "--epochs", "4", "--out", str(whole)]) == 0
    assert [r["epoch"] for r in json.loads((short / "history.json").read_text())] == [1, 2, 3, 4]
    assert json.loads((short / "config.json").read_text())["training"]["epochs"] == 4
    assert json.loads((short / "metrics.json").read_text())["epochs_run"] == 4
    from barenet.serialize import load_arrays
    a, _ = load_arrays(short / "model.safetensors")
    b, _ = load_arrays(whole / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    # The same number again, or no number, is the run as it stands.
    assert main(["train", "--resume", str(short), "--epochs", "4", "-q"]) == 0


def test_resume_refuses_to_stretch_a_schedule_fitted_to_the_epochs(run_dir, capsys):
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert main(["train", "--resume", str(run_dir), "--epochs", "4"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "--epochs" in line and "cosine" in line and "2 epochs" in line
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_resume_refuses_fewer_epochs_than_done(tiny_data, tmp_path, capsys):
    run = train(tmp_path / "run", "--set", "schedule.name=none")
    assert main(["train", "--resume", str(run), "--epochs", "1"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "--epochs 1" in line and "2 epochs" in line


@pytest.mark.parametrize("option, value, key", [
    ("--lr", "0.5", "optimizer.lr"),
    ("--batch-size", "10", "training.batch_size"),
    ("--seed", "3", "training.seed"),
    ("--dataset", "fashion-mnist", "data.dataset"),
])
def test_resume_refuses_other_changes_naming_the_option(run_dir, capsys, option, value, key):
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert main(["train", "--resume", str(run_dir), option, value]) == 2
    line = one_line(capsys.readouterr().err)
    assert option in line and key in line
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_resume_accepts_options_equal_to_the_run(run_dir):
    assert main(["train", "--resume", str(run_dir), "--epochs", "2", "--seed", "0",
                 "--batch-size", "50", "--dataset", "mnist", "-q"]) == 0


# (e) `predict --index -1` was accepted (Python's last item).


def test_predict_refuses_negative_index(run_dir, capsys):
    assert main(["predict", str(run_dir), "--index", "-1"]) == 2
    assert "--index -1" in one_line(capsys.readouterr().err)
    assert main(["predict", str(run_dir), "--index", "200"]) == 2     # the tiny set has 200
    assert "0-199" in one_line(capsys.readouterr().err)


# (f) `explore` without a terminal wrote escape codes and never exited.


def test_explore_without_a_terminal_says_so_and_exits(run_dir):
    done = subprocess.run([sys.executable, "-c", "from barenet.app.cli import run; run()",
                           "explore", str(run_dir)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "\x1b" not in done.stdout + done.stderr
    line = one_line(done.stderr)
    assert "terminal" in line and "barenet predict" in line


# (g) `report --only ...` without --png-dir was ignored without a word.


def test_report_only_needs_png_dir(run_dir, capsys):
    assert main(["report", str(run_dir), "--only", "curves"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "--only" in line and "--png-dir" in line
    assert not (run_dir / "report.html").exists()
    assert main(["report", str(run_dir), "--only", "curvs", "--png-dir", "x"]) == 2
    assert "unknown plot curvs" in one_line(capsys.readouterr().err)


# (h) `evaluate` on a folder that is not a run suggested `barenet train --resume` of it.


def test_evaluate_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    folder = tmp_path / "pictures"
    folder.mkdir()
    assert main(["evaluate", str(folder)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "--resume" not in line and "not a run directory" in line
    assert "model.safetensors" in line


def test_evaluate_on_a_folder_of_runs_names_them(run_dir, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "--resume" not in line and str(run_dir) in line


def test_evaluate_on_an_unfinished_run_suggests_resume(run_dir, capsys):
    (run_dir / "model.safetensors").unlink()
    assert main(["evaluate", str(run_dir)]) == 2
    assert f"barenet train --resume {run_dir}" in one_line(capsys.readouterr().err)


# (i) The last line of `train` named every file but report.html.


def test_train_last_line_names_the_report(tiny_data, tmp_path, monkeypatch, capsys):
    from barenet.app import runs
    from barenet.app.report import write_report
    pytest.importorskip("matplotlib")

    monkeypatch.setattr(runs, "_write_report", lambda out: write_report(out))
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert str(out / "report.html") in last and (out / "report.html").is_file()
