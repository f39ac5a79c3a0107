"""`barenet lr-find` on the tiny synthetic set: curve, early stop, suggestion, plot."""

import json

import numpy as np
import pytest

from barenet.app.cli import main
from barenet.app.lrfind import smooth, smoothing_factor, suggest

FAST = ["--set", "model.hidden=[32]", "--steps", "60"]


def run_json(capsys, *args) -> dict:
    assert main(["lr-find", *FAST, "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_writes_png_and_prints_suggestion(tiny_data, tmp_path, capsys):
    out = tmp_path / "plots" / "lr.png"
    assert main(["lr-find", *FAST, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "suggested learning rate:" in text and str(out) in text


def test_rates_grow_exponentially_from_start(tiny_data, tmp_path, capsys):
    result = run_json(capsys, "--start", "1e-5", "--end", "0.1", "--out", str(tmp_path / "a.png"))
    lrs = np.array(result["lr"])
    assert len(lrs) == len(result["loss"]) == len(result["smoothed"])
    assert lrs[0] == pytest.approx(1e-5)
    ratios = lrs[1:] / lrs[:-1]
    # 60 steps from 1e-5 to 1e-1: a constant ratio of 10^(4/59).
    assert np.allclose(ratios, 10 ** (4 / 59))
    if result["stopped"] is None:
        assert len(lrs) == 60 and lrs[-1] == pytest.approx(0.1)


def test_stops_early_when_the_loss_explodes(tiny_data, tmp_path, capsys):
    result = run_json(capsys, "--end", "1e4", "--out", str(tmp_path / "b.png"))
    assert result["stopped"] and len(result["lr"]) < 60
    # The suggestion lies where the loss was falling, well below the explosion.
    suggested = result["suggested_steepest"]
    assert 1e-6 <= suggested < result["suggested_min_loss"] <= result["lr"][-1]
    assert result["suggested_min_loss_over_10"] == pytest.approx(
        result["suggested_min_loss"] / 10)


def test_the_loss_falls_at_the_suggested_rate(tiny_data, tmp_path, capsys):
    result = run_json(capsys, "--out", str(tmp_path / "c.png"))
    smoothed = np.array(result["smoothed"])
    i = result["lr"].index(result["suggested_steepest"])
    assert smoothed[i + 1] < smoothed[i - 1] < smoothed[0]


def test_same_config_same_curve(tiny_data, tmp_path, capsys):
    a = run_json(capsys, "--out", str(tmp_path / "a.png"))
    b = run_json(capsys, "--out", str(tmp_path / "b.png"))
    assert a["loss"] == b["loss"]


def test_full_batch_config_takes_at_least_100_steps(tiny_data, tmp_path, capsys):
    assert main(["lr-find", "--set", "model.hidden=[8]", "--set", "training.batch_size=0",
                 "--end", "10", "--json", "--out", str(tmp_path / "d.png")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["lr"]) == 100 or result["stopped"]


@pytest.mark.parametrize("args,message", [
    (["--start", "1", "--end", "0.1"], "--start"),
    (["--set", "optimizer.lr=-1"], "optimizer.lr"),
    (["--steps", "1"], "--steps"),
])
def test_bad_input_exits_2(tiny_data, tmp_path, args, message, capsys):
    assert main(["lr-find", *args, "--out", str(tmp_path / "x.png")]) == 2
    assert message in capsys.readouterr().err


def test_smoothing_has_no_lag_on_a_ramp():
    ramp = np.linspace(0.0, 1.0, 201)                 # rises 0.005 per step
    beta = smoothing_factor(201)                      # 1 / (1 - beta) ~ 8 steps
    smoothed = np.array(smooth(list(ramp), beta))
    # A one-way EMA trails a ramp by ~1/(1-beta) - 1 = 7 steps (0.035); forward-backward
    # stays within half a step of it away from the ends.
    assert np.abs(smoothed[40:-40] - ramp[40:-40]).max() < 0.0025
    one_way, average = [], 0.0
    for v in ramp:
        average = beta * average + (1 - beta) * v
        one_way.append(average)
    assert np.abs(np.array(one_way[30:]) - ramp[30:]).min() > 0.03


def test_suggest_on_a_known_curve():
    lrs = np.logspace(-4, 0, 41)                      # 10 points per decade
    loss = 1.0 / (1.0 + np.exp(4 * (np.log10(lrs) + 2)))   # steepest at lr = 1e-2
    loss[35:] += np.linspace(0.1, 2.0, 6)             # the explosion after lr ~ 0.3
    s = suggest(list(lrs), list(loss))
    assert s["steepest"] == pytest.approx(1e-2)
    assert s["min_loss"] == pytest.approx(lrs[34])
    assert suggest([1e-3, 1e-2], [1.0, 0.5])["steepest"] is None
