"""Shipped models: in the package, listed by `barenet models`, usable by name or by default."""

import json

import numpy as np
import pytest

from barenet.app import shipped
from barenet.app.cli import main
from barenet.serialize import load_model


def digit_png(path, digit=7):
    """A dark digit drawn on a light page, as a user's photo or drawing would be."""
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("L", (120, 120), 255)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=90)
    draw.text((30, 5), str(digit), fill=0, font=font)
    page.save(path)
    return path


@pytest.mark.parametrize("name", sorted(shipped.SHIPPED))
def test_every_shipped_model_is_in_the_package_and_loads(name):
    path = shipped.shipped_path(name)
    assert path is not None and path.suffix == ".safetensors"
    model, meta = load_model(path)
    assert meta["metrics"]["test_accuracy"] > 0.98
    assert path.stat().st_size < 4_000_000            # the wheel stays small
    assert model.predict(np.zeros((2, 28, 28), np.uint8)).shape == (2,)


def test_models_command_lists_accuracy_size_and_command(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(shipped.SHIPPED)
    assert rows[shipped.DEFAULT]["default"]
    for row in rows.values():
        assert row["mnist_test_accuracy"] > 0.98 and row["size_kb"] > 0
        assert row["command"].startswith("barenet train")
    assert main(["models"]) == 0
    assert "made by" in capsys.readouterr().out


def test_predict_an_image_with_no_model_uses_the_default(tmp_path, capsys):
    png = digit_png(tmp_path / "seven.png")
    assert main(["predict", str(png), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["label"] == 7


def test_a_shipped_name_works_where_a_model_path_does(tmp_path, capsys):
    png = digit_png(tmp_path / "three.png", 3)
    assert main(["predict", "mlp", str(png), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["label"] == 3


def test_a_local_directory_of_that_name_wins_over_the_shipped_model(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cnn").mkdir()
    assert main(["predict", "cnn", "--index", "0"]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_evaluate_by_name(tiny_data, capsys):
    assert main(["evaluate", "mlp", "--json"]) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1.0


def test_a_missing_image_is_named_and_an_unknown_model_lists_the_shipped_ones(tmp_path,
                                                                             monkeypatch,
                                                                             capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "nowhere.png"]) == 2
    assert "nowhere.png" in capsys.readouterr().err
    assert main(["evaluate", "cnnx"]) == 2
    err = capsys.readouterr().err
    assert "cnnx" in err and "cnn, mlp" in err and "Traceback" not in err
