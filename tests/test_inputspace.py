"""The input-space check (barenet.inputspace): images unlike every training digit are "not sure".

The subspace, its threshold, its place in model files and runs, and each app that uses it:
predict (text and JSON), evaluate, the web API and the model card.
"""

import json

import numpy as np
import pytest

import barenet as bn
from barenet.inputspace import InputSpace
from barenet.serialize import ModelFileError, load_arrays, load_model, save_arrays, save_model
from conftest import synthetic_digits


@pytest.fixture(scope="module")
def space():
    (x, _), _ = synthetic_digits(2000, 10)
    return InputSpace.fit(x, directions=20)


def test_held_out_digits_are_typical_and_other_pictures_are_not(space):
    _, (x_new, _) = synthetic_digits(10, 1000, seed=5)
    assert space.typical(x_new).mean() > 0.97                  # new digits of the same kind
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (50, 28, 28)).astype(np.uint8)
    blank = np.zeros((1, 28, 28), np.uint8)
    scribble = np.zeros((1, 28, 28), np.uint8)
    scribble[0, 3:25, 12:15] = 255                             # one long stroke
    for other in (noise, blank, scribble):
        assert not space.typical(other).any()


def test_the_threshold_refuses_the_quantile_of_held_out_training_images():
    (x, _), _ = synthetic_digits(3000, 10, seed=1)
    fitted = InputSpace.fit(x, directions=10, quantile=0.9, held_out=0.5, rng=3)
    held = x[np.random.default_rng(3).permutation(len(x))[:1500]]
    assert abs(fitted.typical(held).mean() - 0.9) < 0.002      # by construction


def test_an_image_inside_the_subspace_has_no_residual(space):
    inside = space.mean + 0.3 * space.directions[0] - 0.2 * space.directions[5]
    assert space.residual(inside[None])[0] < 1e-4
    assert space.residual((space.mean + 5 * space.directions[1])[None])[0] < 1e-3
    # uint8 and [0, 1] float pixels are the same images
    (x, _), _ = synthetic_digits(5, 1)
    np.testing.assert_allclose(space.residual(x), space.residual(x / 255.0), rtol=1e-5)


def test_a_model_file_keeps_the_space_and_files_without_one_still_load(space, tmp_path):
    net = bn.mlp(784, [8], 10, rng=0)
    save_model(tmp_path / "plain.safetensors", net)
    assert load_model(tmp_path / "plain.safetensors")[0].input_space is None
    net.input_space = space
    save_model(tmp_path / "with.safetensors", net)
    loaded, _ = load_model(tmp_path / "with.safetensors")
    np.testing.assert_array_equal(loaded.input_space.directions, space.directions)
    np.testing.assert_array_equal(loaded.input_space.mean, space.mean)
    assert loaded.input_space.threshold == pytest.approx(space.threshold)
    np.testing.assert_array_equal(loaded.predict_proba(np.zeros((2, 784), np.float32)),
                                  net.predict_proba(np.zeros((2, 784), np.float32)))


def test_train_writes_the_space_and_predict_says_not_sure_for_a_scribble(tmp_path, tiny_data,
                                                                        capsys):
    from PIL import Image

    from barenet.app.cli import main

    def run(*args):
        capsys.readouterr()
        code = main(list(args))
        return code, capsys.readouterr().out

    out = tmp_path / "run"
    code, _ = run("train", "--epochs", "2", "--set", "model.hidden=[32]", "-q", "--out", str(out))
    assert code == 0
    model, _ = load_model(out / "model.safetensors")
    assert model.input_space is not None
    assert model.input_space.typical(tiny_data[1][0]).mean() > 0.95

    canvas = np.full((280, 280), 255, np.uint8)                 # black ink on white, drawn
    canvas[40:240, 60:80] = 0
    canvas[40:60, 60:220] = 0
    canvas[200:220, 120:240] = 0
    Image.fromarray(canvas).save(tmp_path / "scribble.png")
    args = ("predict", str(out), str(tmp_path / "scribble.png"))
    code, plain = run(*args)
    assert code == 0 and "not sure" not in plain                # no --reject: an answer
    code, text = run(*args, "--reject", "0.01")
    assert code == 0 and "not sure (looks like no training digit)" in text
    rows = json.loads(run(*args, "--reject", "0.01", "--json")[1])
    assert rows[0]["typical"] is False and rows[0]["answer"] is None
    rows = json.loads(run(*args, "--reject", "0", "--json")[1])   # 0: answer everything
    assert rows[0]["typical"] is False and rows[0]["answer"] == rows[0]["label"]

    report = json.loads(run("evaluate", str(out), "--reject", "0.5", "--json")[1])
    both = report["reject"]["input_space"]
    assert 0.95 < both["typical"] <= 1 and both["coverage"] <= report["reject"]["coverage"]
    code, text = run("evaluate", str(out), "--reject", "0.5")
    assert code == 0 and "input-space check" in text

    # --reject alone (or `--reject model`): the threshold the run calibrated on its
    # validation images, stored in metrics.json and in the model file; 60 images are too
    # few to calibrate on, so this run has none and the default 0.9 applies
    calibrated = json.loads((out / "metrics.json").read_text())["reject"]
    assert calibrated == {"threshold": None, "target": 0.995, "images": 60}
    assert load_model(out / "model.safetensors")[1]["reject"] == calibrated
    report = json.loads(run("evaluate", str(out), "--json", "--reject")[1])
    assert report["reject"]["threshold"] == 0.9 and "input_space" not in report["coverage"][0]
    arrays, meta = load_arrays(out / "model.safetensors")         # a calibrated threshold
    save_arrays(tmp_path / "calibrated.safetensors", arrays,
                {**meta, "reject": {**calibrated, "threshold": 0.42}})
    for given in (["--reject"], ["--reject", "model"]):
        report = json.loads(run("evaluate", str(tmp_path / "calibrated.safetensors"), "--json",
                                *given)[1])
        assert report["reject"]["threshold"] == 0.42
    code = main(["evaluate", str(out), "--reject", "most"])
    assert code == 2 and "Traceback" not in capsys.readouterr().err


def test_the_web_api_says_whether_a_drawing_looks_like_a_digit(space):
    from fastapi.testclient import TestClient

    from barenet.app.server import create_app

    (x, y), _ = synthetic_digits(300, 10)
    net = bn.mlp(784, [16], 10, rng=0)
    bn.fit(net, bn.softmax_cross_entropy, bn.Adam(net.parameters(), 3e-3), x, y, epochs=2,
           batch_size=64, rng=0)
    net.input_space = space
    client = TestClient(create_app(net, {}))
    assert client.get("/api/model").json()["input_space"] is True
    digit = client.post("/api/predict", json={"pixels": x[0].tolist()}).json()
    assert digit["typical"] is True
    blank = client.post("/api/predict", json={"pixels": np.full((28, 28), 255).tolist()})
    assert blank.json()["typical"] is False
    net.input_space = None
    assert client.post("/api/predict", json={"pixels": x[0].tolist()}).json()["typical"] is None


def test_an_ensemble_file_keeps_the_space_and_damaged_arrays_are_refused(space, tmp_path):
    from barenet.ensemble import Ensemble, save_ensemble

    ensemble = Ensemble([bn.mlp(784, [8], 10, rng=0), bn.mlp(784, [8], 10, rng=1)])
    ensemble.input_space = space
    save_ensemble(tmp_path / "ens.safetensors", ensemble)
    loaded, _ = load_model(tmp_path / "ens.safetensors")
    assert isinstance(loaded, Ensemble)
    np.testing.assert_array_equal(loaded.input_space.directions, space.directions)

    arrays, meta = load_arrays(tmp_path / "ens.safetensors")
    for name, bad in [("input_space.threshold", np.zeros(0, np.float32)),
                      ("input_space.directions", np.zeros((3, 5), np.float32)),
                      ("input_space.mean", np.full(784, np.nan, np.float32))]:
        save_arrays(tmp_path / "bad.safetensors", {**arrays, name: bad}, meta)
        with pytest.raises(ModelFileError, match="input.space"):
            load_model(tmp_path / "bad.safetensors")
    assert len(space.residual(np.zeros((0, 28, 28), np.uint8))) == 0
