"""fit, evaluate, callbacks, determinism, divergence, checkpoints and bit-exact resume."""

import numpy as np
import pytest

import barenet as bn
from barenet.training import TrainingDiverged


def xor_data():
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([0, 1, 1, 0])
    return np.tile(x, (8, 1)), np.tile(y, 8)


def test_xor_smoke_is_learned_and_deterministic():
    x, y = xor_data()

    def run():
        model = bn.Sequential(bn.Dense(2, 16, rng=0), bn.Tanh(), bn.Dense(16, 2, rng=1))
        opt = bn.Adam(model.parameters(), lr=0.05)
        history = bn.fit(model, bn.softmax_cross_entropy, opt, x, y, epochs=60, batch_size=8,
                         rng=0)
        return model, history

    model, history = run()
    assert np.array_equal(model.predict(x[:4]), [0, 1, 1, 0])
    assert history["loss"][-1] < 0.05 < history["loss"][0]
    model2, history2 = run()
    assert history["loss"] == history2["loss"]
    for a, b in zip(model.parameters(), model2.parameters()):
        assert np.array_equal(a.data, b.data)


def test_fit_on_uint8_images_with_validation(tiny_data):
    (x, y), (xt, yt) = tiny_data
    model = bn.mlp(784, [32], 10, rng=0)
    opt = bn.SGD(model.parameters(), lr=0.1, momentum=0.9)
    history = bn.fit(model, bn.softmax_cross_entropy, opt, x, y, epochs=3, batch_size=50,
                     validation=(xt, yt), rng=0)
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert history["val_accuracy"][-1] > 0.95
    assert bn.evaluate(model, xt, yt)["accuracy"] > 0.95
    assert model.predict_proba(xt).dtype == np.float32


def test_early_stopping_restores_best():
    x, y = xor_data()
    model = bn.Sequential(bn.Dense(2, 4, rng=0), bn.ReLU(), bn.Dense(4, 2, rng=1))
    opt = bn.SGD(model.parameters(), lr=1e-6)             # no progress: stops after patience
    stopper = bn.EarlyStopping(model, "val_loss", patience=2, min_delta=1.0)
    history = bn.fit(model, bn.softmax_cross_entropy, opt, x, y, epochs=50, batch_size=32,
                     validation=(x, y), callbacks=[stopper], rng=0)
    assert len(history) == 3 and stopper.stopped_epoch == 2 and stopper.best_epoch == 0


def test_divergence_stops_with_clear_message():
    x, y = xor_data()
    model = bn.Sequential(bn.Dense(2, 4, rng=0), bn.ReLU(), bn.Dense(4, 2, rng=1))
    model.layers[0].W.data[0, 0] = np.inf
    opt = bn.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TrainingDiverged, match="loss became nan"):
        bn.fit(model, bn.softmax_cross_entropy, opt, x, y, epochs=2, batch_size=32, rng=0)


def test_split_validation_is_seeded():
    x = np.arange(100)
    (a, _), (va, _) = bn.split_validation(x, x, 0.1, rng=3)
    (b, _), (vb, _) = bn.split_validation(x, x, 0.1, rng=3)
    assert np.array_equal(va, vb) and len(va) == 10 and len(a) == 90
    assert set(a) | set(va) == set(range(100))
