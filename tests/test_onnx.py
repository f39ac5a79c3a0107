"""ONNX export: onnxruntime against barenet, layer by layer on random input, then on the
10,000 MNIST test images for the shipped MLP and CNN and a cnn-fast model; the CLI command."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from click.testing import CliRunner  # noqa: E402

from barenet import Ensemble, Sequential  # noqa: E402
from barenet.app.export_cmd import command  # noqa: E402
from barenet.ensemble import TTA_PRESETS  # noqa: E402
from barenet.layers import Layer  # noqa: E402
from barenet.onnx_export import _LAYERS, ExportError, to_onnx  # noqa: E402
from barenet.registry import LAYERS  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TOLERANCE = 1e-5


def run(proto, x):
    session = ort.InferenceSession(proto.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    label, probs = session.run(None, {"input": x})
    return label, probs


def assert_same(model, x, **kwargs):
    label, probs = run(to_onnx(model, **kwargs), x)
    np.testing.assert_allclose(probs, model.predict_proba(x), atol=TOLERANCE, rtol=0)
    np.testing.assert_array_equal(label, model.predict(x))
    return label, probs


def with_random_state(model, seed=0):
    """Batch-norm statistics and affine parameters away from their identity defaults."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if hasattr(layer, "running_var"):
            n = layer.num_features
            layer.running_mean[...] = rng.normal(0, 0.5, n)
            layer.running_var[...] = rng.uniform(0.5, 2.0, n)
            layer.gamma.data[...] = rng.uniform(0.5, 1.5, n)
            layer.beta.data[...] = rng.normal(0, 0.2, n)
        if getattr(layer, "b", None) is not None:
            layer.b.data[...] = rng.normal(0, 0.1, layer.b.data.shape)
    return model.eval()


def dense_net(*middle, n_in=20):
    spec = [{"type": "Dense", "n_in": n_in, "n_out": 16}, *middle,
            {"type": "Dense", "n_in": 16, "n_out": 5}]
    return with_random_state(Sequential.from_architecture(spec, rng=0))


ROW_MODELS = {
    "ReLU": [{"type": "ReLU"}],
    "LeakyReLU": [{"type": "LeakyReLU", "alpha": 0.2}],
    "Sigmoid": [{"type": "Sigmoid"}],
    "Tanh": [{"type": "Tanh"}],
    "GELU": [{"type": "GELU"}],
    "SiLU": [{"type": "SiLU"}],
    "Softmax": [{"type": "Softmax"}],
    "Dropout": [{"type": "Dropout", "p": 0.5}],
    "BatchNorm1d": [{"type": "BatchNorm1d", "num_features": 16}, {"type": "ReLU"}],
    "Dense without bias": [{"type": "Dense", "n_in": 16, "n_out": 16, "bias": False}],
    "Flatten": [{"type": "Flatten"}],
}


@pytest.mark.parametrize("name", list(ROW_MODELS))
def test_row_layers_match(name):
    model = dense_net(*ROW_MODELS[name])
    x = np.random.default_rng(1).normal(0, 2, (64, 20)).astype(np.float32)
    assert_same(model, x, input_type="float32")


CONV_MODELS = {
    "Conv2D stride, padding, no bias, BatchNorm2d": [
        {"type": "Conv2D", "in_channels": 1, "out_channels": 4, "kernel_size": [3, 5],
         "stride": 2, "padding": [1, 2], "bias": False},
        {"type": "BatchNorm2d", "num_features": 4}, {"type": "ReLU"},
        {"type": "Flatten"}, {"type": "Dense", "n_in": 4 * 14 * 14, "n_out": 10}],
    "MaxPool2D overlapping, padded; Dropout2d": [
        {"type": "Conv2D", "in_channels": 1, "out_channels": 3, "kernel_size": 3},
        {"type": "MaxPool2D", "kernel_size": 3, "stride": 2, "padding": 1},
        {"type": "Dropout2d", "p": 0.3},
        {"type": "Conv2D", "in_channels": 3, "out_channels": 6, "kernel_size": 3, "padding": 1},
        {"type": "MaxPool2D", "kernel_size": 2},
        {"type": "Flatten"}, {"type": "Dense", "n_in": 6 * 6 * 6, "n_out": 10}],
    "AvgPool2D padded (count_include_pad), GlobalAvgPool2D": [
        {"type": "Conv2D", "in_channels": 1, "out_channels": 5, "kernel_size": 3},
        {"type": "Tanh"},
        {"type": "AvgPool2D", "kernel_size": 3, "stride": 2, "padding": 1},
        {"type": "Conv2D", "in_channels": 5, "out_channels": 7, "kernel_size": 3},
        {"type": "GELU"}, {"type": "GlobalAvgPool2D"},
        {"type": "Dense", "n_in": 7, "n_out": 10}],
}


@pytest.mark.parametrize("name", list(CONV_MODELS))
def test_conv_layers_match(name):
    model = with_random_state(Sequential.from_architecture(CONV_MODELS[name], rng=0))
    images = np.random.default_rng(2).integers(0, 256, (40, 28, 28), dtype=np.uint8)
    label, probs = assert_same(model, images)
    # the same graph exported for rows (N, 784), and for float input used as it is
    np.testing.assert_array_equal(assert_same(model, images.reshape(40, 784),
                                              input_shape="rows")[0], label)
    floats = images.astype(np.float32) / 255.0
    assert_same(model, floats, input_type="float32", input_shape="images")


def test_every_layer_type_has_an_export():
    assert set(LAYERS) <= set(_LAYERS)
    exercised = {e["type"] for spec in [*ROW_MODELS.values(), *CONV_MODELS.values()]
                 for e in spec} | {"Dense"}
    assert set(LAYERS) <= exercised


def test_ensemble_with_weights_and_views():
    members = [with_random_state(Sequential.from_architecture(spec, rng=i))
               for i, spec in enumerate([CONV_MODELS["MaxPool2D overlapping, padded; "
                                                     "Dropout2d"],
                                         [{"type": "Dense", "n_in": 784, "n_out": 10}]])]
    images = np.random.default_rng(3).integers(0, 256, (30, 28, 28), dtype=np.uint8)
    for views in ("none", "flip", "flip-shift"):
        ensemble = Ensemble(members, weights=[1.0, 3.0], views=TTA_PRESETS[views])
        assert_same(ensemble, images)
    assert_same(ensemble, images.reshape(30, 784), input_shape="rows")


def test_class_names_become_labels():
    model = dense_net(n_in=4)
    x = np.random.default_rng(4).normal(size=(10, 4)).astype(np.float32)
    names = np.array(["a", "b", "c", "d", "e"])
    label, _ = run(to_onnx(model, input_type="float32", classes=names), x)
    np.testing.assert_array_equal(label, names[model.predict(x)])
    label, _ = run(to_onnx(model, input_type="float32", classes=[3, 5, 7, 9, 11]), x)
    np.testing.assert_array_equal(label, np.array([3, 5, 7, 9, 11])[model.predict(x)])


def test_unknown_layer_is_one_line_error():
    class Mystery(Layer):
        def forward(self, x):
            return x

    model = Sequential(dense_net(n_in=4).layers[0], Mystery())
    with pytest.raises(ExportError, match="no ONNX export for layer Mystery"):
        to_onnx(model, input_type="float32")


def test_metadata_states_preprocessing():
    proto = to_onnx(dense_net(n_in=784))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["preprocessing"] == "uint8 pixels x / 255 inside the graph"
    assert props["input"] == "uint8 (N, 28, 28)"
    assert [o.name for o in proto.graph.output] == ["label", "probabilities"]


# The 10,000 MNIST test images: same class for every image, probabilities within 1e-5.

@pytest.fixture(scope="module")
def mnist():
    from barenet.data import DataError, load_dataset
    try:
        return load_dataset("mnist", progress=False)
    except DataError as exc:
        pytest.skip(f"MNIST unavailable: {exc}")


def _shipped(name):
    from barenet.app.shipped import shipped_path
    from barenet.serialize import load_model
    return load_model(shipped_path(name))[0]


@pytest.mark.integration
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_shipped_models_on_mnist_test_set(mnist, name):
    _, (x_test, _) = mnist
    label, probs = assert_same(_shipped(name), x_test)
    assert len(label) == 10_000


@pytest.mark.integration
def test_cnn_fast_on_mnist_test_set(mnist):
    from barenet.build import build_model, build_optimizer
    from barenet.config import load_config
    from barenet.losses import softmax_cross_entropy
    from barenet.training import fit
    (x_train, y_train), (x_test, _) = mnist
    config = load_config(CONFIGS / "cnn-fast.toml")
    model = build_model(config, rng=0)
    # One epoch on 1,000 images: equality needs a trained model, not a good one.
    fit(model, softmax_cross_entropy, build_optimizer(config, model.parameters()),
        x_train[:1000], y_train[:1000], epochs=1, batch_size=128, rng=0)
    assert_same(model, x_test)


@pytest.mark.integration
def test_shipped_ensemble_with_views_on_mnist_subset(mnist):
    _, (x_test, _) = mnist
    ensemble = Ensemble([_shipped("mlp"), _shipped("cnn")], views=TTA_PRESETS["shift"])
    assert_same(ensemble, x_test[:1000])


# barenet export MODEL --onnx out.onnx

def test_cli_writes_a_checked_file(tmp_path):
    out = tmp_path / "mlp.onnx"
    result = CliRunner().invoke(command, ["mlp", "--onnx", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote {out}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx"]     # no temp files
    import onnx
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    x = np.random.default_rng(5).integers(0, 256, (8, 28, 28), dtype=np.uint8)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(["label"], {"input": x})[0],
                                  _shipped("mlp").predict(x))


def test_cli_refuses_existing_output_unless_forced(tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep")
    result = CliRunner().invoke(command, ["mlp", "--onnx", str(out)])
    assert result.exit_code == 2
    assert result.output == f"Error: {out} exists; add --force to replace it\n"
    assert out.read_bytes() == b"keep"
    result = CliRunner().invoke(command, ["mlp", "--onnx", str(out), "--force", "--rows"])
    assert result.exit_code == 0, result.output
    assert "input uint8 (N, 784)" in result.output


@pytest.mark.parametrize("model, message", [
    ("no-such-model", "no such run directory or model file"),
    ("{tmp}", "not a run directory"),
    ("{tmp}/junk.safetensors", "not a barenet model file"),
])
def test_cli_bad_model_is_one_line_exit_2(tmp_path, model, message):
    (tmp_path / "junk.safetensors").write_bytes(b"\x80\x04junk" * 4)
    result = CliRunner().invoke(command, [model.format(tmp=tmp_path), "--onnx",
                                          str(tmp_path / "o.onnx")])
    assert result.exit_code == 2
    assert message in result.output and result.output.count("\n") == 1
    assert not (tmp_path / "o.onnx").exists()


def test_cli_exports_a_scikit_learn_model_with_its_labels(tmp_path):
    pytest.importorskip("sklearn")
    from barenet.sklearn import NetClassifier
    rng = np.random.default_rng(6)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = np.where(x[:, 0] > 0, "pos", "neg")
    clf = NetClassifier(hidden_layer_sizes=(8,), epochs=5, random_state=0).fit(x, y)
    clf.save(tmp_path / "clf.safetensors")
    result = CliRunner().invoke(command, [str(tmp_path / "clf.safetensors"), "--onnx",
                                          str(tmp_path / "clf.onnx")])
    assert result.exit_code == 0, result.output
    assert "input float32 (N, 3)" in result.output
    session = ort.InferenceSession(str(tmp_path / "clf.onnx"),
                                   providers=["CPUExecutionProvider"])
    label, probs = session.run(None, {"input": x})
    np.testing.assert_array_equal(label, clf.predict(x))
    np.testing.assert_allclose(probs, clf.predict_proba(x), atol=TOLERANCE)


def test_cli_without_onnx_names_the_extra(tmp_path, monkeypatch):
    import barenet.app.extras as extras
    real = extras._present
    monkeypatch.setattr(extras, "_present", lambda m: m != "onnx" and real(m))
    result = CliRunner().invoke(command, ["mlp", "--onnx", str(tmp_path / "o.onnx")])
    assert result.exit_code == 1
    assert result.output == ("Error: barenet export needs the onnx extra (onnx not "
                             "installed): pip install 'barenet[onnx]'\n")


def test_barenet_export_through_main(tmp_path, capsys):
    """The registered command: `barenet export mlp --onnx F`, then a refusal in one line."""
    from barenet.app.cli import main
    out = tmp_path / "mlp.onnx"
    assert main(["export", "mlp", "--onnx", str(out)]) == 0
    assert out.stat().st_size > 0
    before = out.read_bytes()
    assert main(["export", "mlp", "--onnx", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "--force" in err[-1]
    assert out.read_bytes() == before
    assert main(["export", str(tmp_path / "nope"), "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert not (tmp_path / "x.onnx").exists()
