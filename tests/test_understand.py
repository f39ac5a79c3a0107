"""How the network fails: corruptions, robustness curves, adversarial digits, embedding maps."""

import json

import numpy as np
import pytest

import barenet as bn
from barenet import adversarial
from barenet.data.corrupt import CORRUPTIONS, IDENTITY_LEVEL, corrupt
from barenet.ensemble import Ensemble
from barenet.gradcheck import numerical_gradient, relative_error
from conftest import synthetic_digits

SMALL_CNN = [
    {"type": "Conv2D", "in_channels": 1, "out_channels": 3, "kernel_size": 5, "stride": 3},
    {"type": "BatchNorm2d", "num_features": 3}, {"type": "Tanh"},
    {"type": "MaxPool2D", "kernel_size": 2}, {"type": "Flatten"},
    {"type": "Dense", "n_in": 48, "n_out": 10},
]


@pytest.fixture(scope="module")
def trained():
    """An MLP trained on the synthetic digits (~100 % clean) and its test set."""
    (x, y), (xt, yt) = synthetic_digits()
    net = bn.mlp(784, [32], 10, rng=0)
    bn.fit(net, bn.softmax_cross_entropy, bn.Adam(net.parameters(), 3e-3), x, y, epochs=4,
           batch_size=64, rng=0)
    return net, xt, yt.astype(np.int64)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_the_identity_level_returns_the_images_and_others_stay_in_range(name):
    (x, _), _ = synthetic_digits(20, 2)
    clean = bn.Sequential.as_input(x)
    assert np.array_equal(corrupt(x, name, IDENTITY_LEVEL.get(name, 0)), clean)
    for level in CORRUPTIONS[name][1]:
        out = corrupt(x, name, level, seed=3)
        assert out.shape == x.shape and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 1
        assert np.array_equal(out, corrupt(x, name, level, seed=3))        # seeded
    strongest = CORRUPTIONS[name][1][-1]
    assert not np.array_equal(corrupt(x, name, strongest, seed=3), clean)


def test_corruptions_do_what_their_names_say():
    image = np.zeros((1, 28, 28), np.uint8)
    image[0, 8:20, 13:16] = 255                                        # a vertical bar
    ink = corrupt(image, "stroke", 0).sum()
    assert corrupt(image, "stroke", 1).sum() > ink > corrupt(image, "stroke", -1).sum()
    assert corrupt(image, "stroke", -1).sum() > 0                      # 3 px wide: 1 erosion
    assert corrupt(image, "invert", 1.0)[0, 0, 0] == 1.0                # white background
    rotated = corrupt(image, "rotate", 90)[0]
    assert rotated[13:16, 9:19].mean() > 0.5 and rotated[8:12, 13:16].mean() < 0.5
    assert corrupt(image, "blur", 2.0).max() < 1.0
    shifted = corrupt(image, "shift", 4)
    assert abs(shifted.sum() - image.sum() / 255) < 1e-3               # moved, not lost
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(image, "smudge", 1)


def test_robustness_curves_start_at_the_clean_accuracy(trained):
    from barenet.app.robustness import curves
    net, xt, yt = trained
    clean = float(np.mean(net.predict(xt) == yt))
    result = curves(net, xt, yt, list(CORRUPTIONS), seed=0, fgsm=True)
    for name, curve in result.items():
        level = 0 if name == "fgsm" else IDENTITY_LEVEL.get(name, 0)
        assert curve["accuracy"][curve["levels"].index(level)] == clean, name
    noise = result["noise"]["accuracy"]
    assert noise[-1] < noise[0]


def test_fgsm_with_eps_zero_changes_nothing_and_a_larger_eps_never_helps(trained):
    net, xt, yt = trained
    assert np.array_equal(adversarial.fgsm(net, xt, yt, 0.0), bn.Sequential.as_input(xt))
    accuracy = [np.mean(net.predict(adversarial.fgsm(net, xt, yt, eps)) == yt)
                for eps in (0.0, 0.05, 0.1, 0.2, 0.3)]
    assert all(b <= a for a, b in zip(accuracy, accuracy[1:])), accuracy
    assert accuracy[-1] < accuracy[0]
    pgd = adversarial.pgd(net, xt, yt, 0.1, steps=5)
    assert np.abs(pgd - xt / 255).max() <= 0.1 + 1e-6
    assert np.mean(net.predict(pgd) == yt) <= np.mean(
        net.predict(adversarial.fgsm(net, xt, yt, 0.1)) == yt) + 0.02


@pytest.mark.parametrize("spec", ["mlp", "cnn"])
def test_the_input_gradient_of_the_loss_matches_numerical_gradients(spec):
    rng = np.random.default_rng(0)
    if spec == "mlp":
        net = bn.mlp(784, [12], 10, activation="Tanh", dropout=0.5, rng=1, dtype=np.float64)
    else:
        net = bn.Sequential.from_architecture(SMALL_CNN, rng=1, dtype=np.float64)
        net.train()
        net.forward(rng.random((8, 28, 28)))                           # running statistics
    net.train()                                                        # must be evaluated off
    x = rng.random((3, 28, 28))
    labels = np.array([1, 4, 7])
    _, grad = adversarial.loss_gradient(net, x, labels)
    assert net.training                                                # mode restored

    def loss():
        net.eval()
        value, _ = bn.softmax_cross_entropy(net.forward(x), labels)
        return value

    numeric = numerical_gradient(loss, x)
    assert relative_error(grad, numeric) < 1e-7


def test_smallest_flip_finds_an_eps_that_flips_and_none_below(trained):
    net, xt, yt = trained
    found = adversarial.smallest_flip(net, xt[0], resolution=0.01)
    assert found is not None
    eps, image, new = found
    before = int(net.predict(xt[:1])[0])
    assert new != before and int(net.predict(image[None])[0]) == new
    assert np.abs(image - xt[0] / 255).max() <= eps + 1e-6
    assert int(net.predict(adversarial.fgsm(net, xt[:1], [before], eps - 0.01))[0]) == before


def test_an_ensemble_is_refused_with_one_line(trained):
    net, xt, yt = trained
    with pytest.raises(adversarial.NoGradient, match="ensemble"):
        adversarial.fgsm(Ensemble([net, net]), xt, yt, 0.1)


def test_pca_matches_the_textbook_definition():
    from barenet.app.embed import pca
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5)) @ np.diag([5.0, 2.0, 1.0, 0.5, 0.1])
    coords, share = pca(x)
    centred = x - x.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(centred.T, bias=True))
    top = vectors[:, ::-1][:, :2]
    assert np.allclose(np.abs(coords), np.abs(centred @ top))
    assert np.allclose(share, values[::-1][:2] / values.sum())


def test_robustness_command_writes_curves_for_several_models(trained, tmp_path, tiny_data,
                                                             capsys):
    from barenet.app.robustness import command
    net, _, _ = trained
    bn.save_model(tmp_path / "a.safetensors", net)
    bn.save_model(tmp_path / "b.safetensors", net)
    command.main([str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                  "--images", "50", "--corruptions", "noise,rotate", "--out",
                  str(tmp_path / "out")], standalone_mode=False)
    result = json.loads((tmp_path / "out" / "robustness.json").read_text())
    assert [m["name"] for m in result["models"]] == ["a.safetensors", "b.safetensors"]
    assert list(result["models"][0]["curves"]) == ["noise", "rotate", "fgsm"]
    assert (tmp_path / "out" / "robustness.png").read_bytes()[:4] == b"\x89PNG"
    assert "clean" in capsys.readouterr().out


@pytest.fixture(scope="module")
def trained_cnn():
    """SMALL_CNN trained briefly on the synthetic digits."""
    (x, y), _ = synthetic_digits()
    net = bn.Sequential.from_architecture(SMALL_CNN, rng=0)
    bn.fit(net, bn.softmax_cross_entropy, bn.Adam(net.parameters(), 3e-3), x, y, epochs=2,
           batch_size=64, rng=0)
    return net


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_embed_and_attack_commands_write_pictures(kind, trained, trained_cnn, tmp_path,
                                                  tiny_data):
    from barenet.app.attack import command as attack
    from barenet.app.embed import command as embed
    from barenet.app.robustness import command as robustness
    net = trained[0] if kind == "mlp" else trained_cnn
    bn.save_model(tmp_path / "m.safetensors", net)
    robustness.main([str(tmp_path / "m.safetensors"), "--images", "50", "--corruptions",
                     "shift,invert", "--out", str(tmp_path / "r")], standalone_mode=False)
    curves = json.loads((tmp_path / "r" / "robustness.json").read_text())["models"][0]["curves"]
    assert list(curves) == ["shift", "invert", "fgsm"]
    model = str(tmp_path / "m.safetensors")
    for layer in ("input", "1", "-1"):
        embed.main([model, "--layer", layer, "--images", "100", "--out",
                    str(tmp_path / f"e{layer}.png")], standalone_mode=False)
        assert (tmp_path / f"e{layer}.png").stat().st_size > 1000
    attack.main([model, "--index", "3", "--eps", "0.2", "--out", str(tmp_path / "a.png")],
                standalone_mode=False)
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


def test_the_commands_answer_bad_input_and_ensembles_in_one_line(trained, tmp_path, tiny_data,
                                                                 capsys):
    from barenet.app.cli import main
    from barenet.ensemble import save_ensemble
    net, _, _ = trained
    path = tmp_path / "ens.safetensors"
    save_ensemble(path, Ensemble([net, net]))
    assert main(["attack", str(path), "--out", str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ensemble has no single gradient" in err
    assert not (tmp_path / "a.png").exists()
    assert main(["embed", str(path), "--layer", "2", "--out", str(tmp_path / "e.png")]) == 2
    assert "no shared hidden layers" in capsys.readouterr().err
    assert main(["embed", str(path), "--images", "50", "--out", str(tmp_path / "e.png")]) == 0
    assert main(["robustness", str(path), "--images", "50", "--corruptions", "blur",
                 "--out", str(tmp_path / "r")]) == 0
    result = json.loads((tmp_path / "r" / "robustness.json").read_text())
    assert list(result["models"][0]["curves"]) == ["blur"]             # no FGSM curve
    assert "no FGSM curve" in capsys.readouterr().err
    for args in (["robustness", str(path), "--corruptions", "smudge"],
                 ["embed", str(path), "--layer", "x"],
                 ["attack", str(tmp_path / "missing.safetensors")]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err

