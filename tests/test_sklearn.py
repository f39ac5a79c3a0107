"""barenet.sklearn.NetClassifier: scikit-learn's own estimator checks, then labels, images,
persistence and the scikit-learn tools users put it in (Pipeline, GridSearchCV)."""

import json
import os
import pickle
import pickletools
import subprocess
import sys
from functools import partial

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from barenet.sklearn import NetClassifier  # noqa: E402

# Small networks and few epochs keep the ~55 checks per estimator to a few seconds; the
# second and third cover the other code paths (activation, optimizer, batch norm, dropout,
# early stopping's held-out split, the one-cycle schedule).
ESTIMATORS = [
    NetClassifier(random_state=0),
    NetClassifier(hidden_layer_sizes=(16,), epochs=10, batch_size=32, random_state=0),
    NetClassifier(hidden_layer_sizes=(16, 8), activation="tanh", dropout=0.1, batch_norm=True,
                  optimizer="adam", lr=0.01, epochs=10, batch_size=16, schedule="onecycle",
                  early_stopping=True, random_state=0),
]


def _check_name(check) -> str:
    while isinstance(check, partial):
        check = check.func
    return check.__name__


# Every check runs and none is expected to fail: the tags (__sklearn_tags__) say what does
# not apply (no NaN, no sparse input, no multi-output), and scikit-learn then checks that
# such input is refused. Two checks skip themselves unless their environment is there:
# check_array_api_input needs SCIPY_ARRAY_API=1 before SciPy is imported, so it runs in a
# fresh interpreter here; the feature-name check needs pandas (in the test extra).
@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda estimator: {})
def test_scikit_learn_estimator_checks(estimator, check):
    if (_check_name(check) == "check_array_api_input"
            and os.environ.get("SCIPY_ARRAY_API") != "1"):
        _array_api_check_in_subprocess(estimator)
        return
    check(estimator)


def _array_api_check_in_subprocess(estimator):
    code = (
        "import json, sys\n"
        "from sklearn.utils.estimator_checks import check_array_api_input\n"
        "from barenet.sklearn import NetClassifier\n"
        "params = json.loads(sys.argv[1])\n"
        "params['hidden_layer_sizes'] = tuple(params['hidden_layer_sizes'])\n"
        "check_array_api_input('NetClassifier', NetClassifier(**params),\n"
        "                      array_namespace='numpy', expect_only_array_outputs=False)\n"
    )
    params = json.dumps(estimator.get_params())
    env = {**os.environ, "SCIPY_ARRAY_API": "1"}
    done = subprocess.run([sys.executable, "-c", code, params], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def small(**kw):
    return NetClassifier(**{"hidden_layer_sizes": (32,), "epochs": 30, "batch_size": 16,
                            "lr": 0.05, "random_state": 0, **kw})


@pytest.fixture(scope="module")
def iris():
    from sklearn.datasets import load_iris
    x, y = load_iris(return_X_y=True)
    from sklearn.preprocessing import StandardScaler
    return StandardScaler().fit_transform(x), y


def test_string_and_non_contiguous_labels(iris):
    x, y = iris
    for labels in (np.array(["setosa", "versicolor", "virginica"])[y],
                   np.array([3, 7, 100])[y]):
        clf = small().fit(x, labels)
        np.testing.assert_array_equal(clf.classes_, np.unique(labels))
        assert clf.predict(x).dtype == labels.dtype
        assert clf.score(x, labels) > 0.9
        assert clf.predict_proba(x).shape == (150, 3)


def test_uint8_images_are_scaled_and_flattened():
    from conftest import synthetic_digits
    (x, y), (x_test, y_test) = synthetic_digits(300, 100)
    clf = small(epochs=5).fit(x, y)                     # (N, 28, 28) uint8
    assert clf.n_features_in_ == 784
    assert clf.score(x_test, y_test) > 0.9
    # uint8 pixels mean pixels / 255, as everywhere in barenet
    np.testing.assert_allclose(clf.predict_proba(x_test[:5].reshape(5, -1) / 255.0),
                               clf.predict_proba(x_test[:5]), atol=1e-6)


def test_conv_layer_list_fills_in_sizes():
    from conftest import synthetic_digits
    (x, y), (x_test, y_test) = synthetic_digits(200, 50)
    layers = [{"type": "Conv2D", "in_channels": 1, "out_channels": 4, "kernel_size": 5},
              {"type": "ReLU"}, {"type": "MaxPool2D", "kernel_size": 4},
              {"type": "Flatten"}, {"type": "Dense", "n_in": 144}]        # n_out: classes
    clf = small(layers=layers, epochs=4).fit(x, y)
    assert type(clf.model_.layers[0]).__name__ == "Conv2D"
    assert clf.model_.layers[-1].n_out == 10
    assert clf.score(x_test, y_test) > 0.8


def test_random_state_fixes_everything(iris):
    x, y = iris
    a, b = small(dropout=0.2).fit(x, y), small(dropout=0.2).fit(x, y)
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))
    assert a.loss_curve_ == b.loss_curve_
    c = small(dropout=0.2, random_state=1).fit(x, y)
    assert not np.array_equal(a.predict_proba(x), c.predict_proba(x))


def test_partial_fit_needs_classes_then_continues(iris):
    x, y = iris
    clf = small()
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(x, y)
    clf.partial_fit(x[:75], y[:75], classes=[0, 1, 2])
    for _ in range(20):
        clf.partial_fit(x, y)
    assert clf.n_iter_ == 21 and len(clf.loss_curve_) == 21
    assert clf.score(x, y) > 0.9
    with pytest.raises(ValueError, match="not in classes"):
        clf.partial_fit(x[:3], [5, 5, 5])


def test_early_stopping_history(iris):
    x, y = iris
    clf = small(early_stopping=True, n_iter_no_change=3, epochs=200).fit(x, y)
    assert set(clf.history_) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert clf.n_iter_ < 200
    assert clf.loss_curve_ == clf.history_["loss"]


def test_quiet_by_default_verbose_prints(iris, capsys):
    x, y = iris
    small(epochs=2).fit(x, y)
    assert capsys.readouterr().out == ""
    small(epochs=2, verbose=True).fit(x, y)
    assert capsys.readouterr().out.count("epoch ") == 2


def test_clone_and_params():
    clf = small(activation="gelu")
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and twin is not clf
    assert clf.set_params(lr=0.2).lr == 0.2


def test_pickle_round_trip_carries_no_barenet_objects(iris):
    x, y = iris
    clf = small(dropout=0.1).fit(x, y)
    blob = pickle.dumps(clf)
    globals_ = {arg for op, arg, _ in pickletools.genops(blob) if op.name == "STACK_GLOBAL"
                or op.name == "GLOBAL"}
    strings = [arg for op, arg, _ in pickletools.genops(blob) if isinstance(arg, str)]
    assert "barenet.sklearn" in strings and "NetClassifier" in strings
    assert not {"barenet.layers", "barenet.model", "barenet.optim"} & set(strings), globals_
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.predict_proba(x), clf.predict_proba(x))
    # training continues from the same weights, optimizer state and random streams
    clf.partial_fit(x, y)
    back.partial_fit(x, y)
    np.testing.assert_array_equal(back.predict_proba(x), clf.predict_proba(x))


def test_save_load_model_file(tmp_path, iris):
    from barenet.serialize import load_model
    x, y = iris
    labels = np.array(["a", "b", "c"])[y]
    clf = small(hidden_layer_sizes=(8, 8)).fit(x, labels)
    clf.save(tmp_path / "iris.safetensors")
    assert (tmp_path / "iris.safetensors").read_bytes()[:1] != b"\x80"     # not a pickle
    back = NetClassifier.load(tmp_path / "iris.safetensors")
    np.testing.assert_array_equal(back.predict(x), clf.predict(x))
    assert back.get_params() == clf.get_params()
    model, meta = load_model(tmp_path / "iris.safetensors")     # barenet reads it as well
    np.testing.assert_array_equal(model.predict_proba(x.astype(np.float32)),
                                  clf.predict_proba(x))
    assert meta["sklearn"]["classes"] == ["a", "b", "c"]


def test_feature_names_survive_save(tmp_path, iris):
    pd = pytest.importorskip("pandas")
    x, y = iris
    frame = pd.DataFrame(x, columns=["sl", "sw", "pl", "pw"])
    clf = small(epochs=3).fit(frame, y)
    clf.save(tmp_path / "m.safetensors")
    back = NetClassifier.load(tmp_path / "m.safetensors")
    assert list(back.feature_names_in_) == ["sl", "sw", "pl", "pw"]
    np.testing.assert_array_equal(back.predict(frame), clf.predict(frame))


def test_load_a_barenet_train_model_file():
    from barenet.app.shipped import shipped_path
    from barenet.serialize import load_model
    path = shipped_path("mlp")
    clf = NetClassifier.load(path)
    np.testing.assert_array_equal(clf.classes_, np.arange(10))
    x = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(clf.predict(x), load_model(path)[0].predict(x))


def test_pipeline_grid_search_and_cross_val():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    x, y = load_digits(return_X_y=True)
    x, y = x[:300], y[:300]
    pipe = make_pipeline(StandardScaler(), small(epochs=10))
    assert cross_val_score(pipe, x, y, cv=3).mean() > 0.8
    grid = GridSearchCV(small(epochs=5), {"lr": [0.01, 0.05], "hidden_layer_sizes": [(16,),
                                                                                    (32,)]},
                        cv=2).fit(x, y)
    assert len(grid.cv_results_["params"]) == 4
    assert grid.best_estimator_.n_iter_ == 5


def test_bad_parameters_fail_in_fit_not_init(iris):
    x, y = iris
    clf = NetClassifier(optimizer="lbfgs", schedule="warp")       # stored as given
    with pytest.raises(ValueError, match="optimizer must be one of"):
        clf.fit(x, y)
    with pytest.raises(ValueError, match="schedule must be one of"):
        small(schedule="warp").fit(x, y)


def test_import_barenet_stays_light():
    code = ("import sys, barenet, barenet.onnx_export\n"
            "heavy = [m for m in ('sklearn', 'onnx', 'onnxruntime') if m in sys.modules]\n"
            "print(heavy)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
