"""Shared fixtures: a tiny synthetic digit set that stands in for MNIST in fast tests."""

import numpy as np
import pytest


def synthetic_digits(n_train=600, n_test=200, seed=0):
    """uint8 (N, 28, 28) images where class k lights a distinct 6x6 square, plus noise.

    Learnable to ~100 % in a few epochs, so end-to-end paths run in well under a second.
    """
    rng = np.random.default_rng(seed)

    def make(n):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for k in range(10):
            r, c = 2 + 6 * (k // 4), 2 + 6 * (k % 4)
            x[labels == k, r:r + 6, c:c + 6] = 230
        return x, labels

    return make(n_train), make(n_test)


@pytest.fixture
def tiny_data(monkeypatch):
    """Makes barenet.data.load_dataset return the synthetic set (no files, no network)."""
    import barenet.data

    data = synthetic_digits()

    def fake_load(name="mnist", data_dir=None, *, progress=None):
        return data

    monkeypatch.setattr(barenet.data, "load_dataset", fake_load)
    return data


@pytest.fixture(autouse=True)
def _no_report_after_train(request, monkeypatch):
    """report.html after every test training run costs seconds; only the report tests want it."""
    if request.module.__name__.rsplit(".", 1)[-1] not in ("test_report",):
        monkeypatch.setattr("barenet.app.runs._write_report", lambda out: None)
