"""Ensemble: averaged probabilities, one model file, the `barenet ensemble` command."""

import json

import numpy as np
import pytest

from barenet.app.cli import main
from barenet.conv import Conv2D
from barenet.ensemble import (
    TTA_PRESETS,
    Ensemble,
    apply_view,
    check_view,
    load_ensemble,
    save_ensemble,
)
from barenet.layers import Dense, ReLU
from barenet.model import Sequential, mlp
from barenet.pooling import GlobalAvgPool2D
from barenet.serialize import load_arrays, load_model
from barenet.training import evaluate

FAST = ["--set", "model.hidden=[32]", "--epochs", "2", "--batch-size", "50", "-q"]


def members():
    cnn = Sequential(Conv2D(1, 3, 3, rng=0), ReLU(), GlobalAvgPool2D(), Dense(3, 10, rng=0))
    return [mlp(784, [16], 10, rng=1), mlp(784, [8], 10, rng=2), cnn]


def test_probabilities_are_the_weighted_mean():
    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    ms = members()
    each = [m.predict_proba(x) for m in ms]
    assert np.allclose(Ensemble(ms).predict_proba(x), np.mean(each, axis=0), atol=1e-6)
    weighted = Ensemble(ms, [1.0, 0.0, 3.0]).predict_proba(x)
    assert np.allclose(weighted, 0.25 * each[0] + 0.75 * each[2], atol=1e-6)
    assert np.allclose(weighted.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(Ensemble(ms).predict(x), np.mean(each, axis=0).argmax(axis=1))


def test_forward_is_log_mean_probability_so_evaluate_works():
    x = np.random.default_rng(1).integers(0, 256, (6, 28, 28)).astype(np.uint8)
    labels = np.arange(6) % 10
    ens = Ensemble(members())
    probs = ens.predict_proba(x)
    result = evaluate(ens, x, labels)
    assert result["accuracy"] == pytest.approx(np.mean(probs.argmax(axis=1) == labels))
    assert result["loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(6), labels])),
                                           rel=1e-4)


def test_bad_weights_and_empty():
    with pytest.raises(ValueError):
        Ensemble([])
    with pytest.raises(ValueError):
        Ensemble(members(), [1.0, -1.0, 1.0])


def test_save_and_load_round_trip(tmp_path):
    x = np.random.default_rng(2).integers(0, 256, (4, 28, 28)).astype(np.uint8)
    ens = Ensemble(members(), [2.0, 1.0, 1.0])
    path = tmp_path / "ens.safetensors"
    save_ensemble(path, ens, note="test")
    arrays, meta = load_arrays(path)
    assert meta["architecture"]["type"] == "Ensemble"
    assert len(meta["architecture"]["members"]) == 3 and meta["note"] == "test"
    assert all(k.split(".", 1)[0] in {"m0", "m1", "m2"} for k in arrays)
    loaded = load_ensemble(arrays, meta)
    assert np.allclose(loaded.predict_proba(x), ens.predict_proba(x), atol=1e-7)
    assert loaded.weights == ens.weights
    with pytest.raises(ValueError):
        load_ensemble({**arrays, "m7.0.W": np.zeros(1, np.float32)}, meta)
    with pytest.raises(ValueError):
        load_ensemble({k: v for k, v in arrays.items() if not k.startswith("m1.")}, meta)


def test_ensemble_command(tiny_data, tmp_path, capsys):
    runs = []
    for seed in (1, 2):
        run = tmp_path / f"run{seed}"
        assert main(["train", *FAST, "--seed", str(seed), "--out", str(run)]) == 0
        runs.append(str(run))
    out = tmp_path / "ens"
    assert main(["ensemble", *runs, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and len(metrics["members"]) == 2
    assert "ensemble of 2: test accuracy" in capsys.readouterr().out

    arrays, meta = load_arrays(out / "model.safetensors")
    ens = load_ensemble(arrays, meta)
    (_, _), (x_test, y_test) = tiny_data
    assert np.mean(ens.predict(x_test) == y_test) == pytest.approx(metrics["test_accuracy"])

    assert main(["ensemble", *runs, "--out", str(out)]) == 2     # refuses to overwrite
    assert main(["ensemble", runs[0], "--out", str(tmp_path / "one")]) == 2


def test_evaluate_and_predict_accept_an_ensemble_file(tiny_data, tmp_path, capsys):
    runs = []
    for seed in (1, 2):
        run = tmp_path / f"run{seed}"
        assert main(["train", *FAST, "--seed", str(seed), "--out", str(run)]) == 0
        runs.append(str(run))
    out = tmp_path / "ens"
    assert main(["ensemble", *runs, "--out", str(out)]) == 0
    model, _ = load_model(out / "model.safetensors")
    assert isinstance(model, Ensemble)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    accuracy = json.loads(capsys.readouterr().out)["accuracy"]
    assert accuracy == pytest.approx(json.loads((out / "metrics.json").read_text())
                                     ["test_accuracy"])
    assert main(["predict", str(out), "--index", "0", "--json"]) == 0


def test_views_shift_and_mirror_with_zero_fill():
    x = np.arange(1, 10, dtype=np.uint8).reshape(1, 3, 3)
    assert apply_view(x, "identity") is x
    assert apply_view(x, "flip").tolist() == [[[3, 2, 1], [6, 5, 4], [9, 8, 7]]]
    assert apply_view(x, "shift:1,0").tolist() == [[[0, 0, 0], [1, 2, 3], [4, 5, 6]]]
    assert apply_view(x, "shift:0,-1").tolist() == [[[2, 3, 0], [5, 6, 0], [8, 9, 0]]]
    flat = apply_view(x.reshape(1, 9), "shift:-1,1")            # flat rows keep their shape
    assert flat.shape == (1, 9) and flat.tolist() == [[0, 4, 5, 0, 7, 8, 0, 0, 0]]
    four = apply_view(x[:, None], "flip")                        # (N, 1, H, W)
    assert four.shape == (1, 1, 3, 3) and four[0, 0, 0].tolist() == [3, 2, 1]
    both = apply_view(x, "flip+shift:1,0")                     # steps apply in order
    assert both.tolist() == [[[0, 0, 0], [3, 2, 1], [6, 5, 4]]]
    assert len(set(TTA_PRESETS["flip-shift"])) == 10
    for bad in ("mirror", "shift:9,0", "shift:1", 3, "flip+", "identity+flip", None):
        with pytest.raises(ValueError):
            check_view(bad)


def test_views_average_members_over_each_view_and_survive_the_file(tmp_path):
    x = np.random.default_rng(3).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    ms = members()[:2]
    views = TTA_PRESETS["shift"]
    expected = np.mean([m.predict_proba(apply_view(x, v)) for v in views for m in ms], axis=0)
    ens = Ensemble(ms, views=views)
    assert np.allclose(ens.predict_proba(x), expected, atol=1e-6)
    single = Ensemble(ms[:1], views=["identity", "flip"])        # one model, mirrored too
    assert np.allclose(single.predict_proba(x), 0.5 * (ms[0].predict_proba(x)
                       + ms[0].predict_proba(x[:, :, ::-1])), atol=1e-6)
    path = tmp_path / "tta.safetensors"
    save_ensemble(path, ens)
    loaded, meta = load_model(path)
    assert meta["architecture"]["views"] == views and loaded.views == views
    assert np.allclose(loaded.predict_proba(x), ens.predict_proba(x), atol=1e-7)
    with pytest.raises(ValueError):
        Ensemble(ms, views=["flip", "flip"])


def test_old_ensemble_files_without_views_still_load(tmp_path):
    x = np.random.default_rng(4).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    ens = Ensemble(members()[:2])
    arrays = ens.state_arrays()
    meta = {"architecture": {k: v for k, v in ens.architecture().items() if k != "views"}}
    loaded = load_ensemble(arrays, meta)
    assert loaded.views == ["identity"]
    assert np.allclose(loaded.predict_proba(x), ens.predict_proba(x), atol=1e-7)


def test_ensemble_command_one_run_needs_tta(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--seed", "1", "--out", str(run)]) == 0
    assert main(["ensemble", str(run), "--out", str(tmp_path / "alone")]) == 2
    assert "--tta" in capsys.readouterr().err
    assert not (tmp_path / "alone").exists()
    out = tmp_path / "tta"
    assert main(["ensemble", str(run), "--tta", "shift", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["views"] == TTA_PRESETS["shift"] and len(metrics["members"]) == 1
    assert main(["evaluate", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)


def test_inference_frees_what_each_member_kept_and_predicts_the_same():
    """Kept activations and im2col buffers were ~250 MB per conv member: 4.2 GB for twelve."""
    from barenet.layers import Flatten
    from barenet.pooling import MaxPool2D

    def member(seed):
        return Sequential(Conv2D(1, 4, 5, rng=seed), ReLU(), MaxPool2D(2), Flatten(),
                          Dense(4 * 12 * 12, 10, rng=seed)).eval()

    x = np.random.default_rng(0).integers(0, 256, (300, 28, 28), dtype=np.uint8)
    members = [member(s) for s in range(3)]
    ensemble = Ensemble(members)
    first = ensemble.predict_proba(x)
    for m in members:
        kept = [name for layer in m.layers for name, value in vars(layer).items()
                if name.startswith("_") and isinstance(value, np.ndarray)]
        assert kept == []
    np.testing.assert_array_equal(ensemble.predict_proba(x), first)
