"""Real MNIST: fetched and verified on first use, then a short training run end to end."""

import json
import os

import pytest

from barenet.app.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mnist():
    from barenet.data import DataError, load_mnist
    try:
        return load_mnist(progress=False)
    except DataError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"real MNIST not reachable here: {exc}")


def test_short_training_on_real_mnist(mnist, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--out", str(out), "-q"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.95
    assert main(["predict", str(out), "--index", "0", "--json"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == pytest.approx(metrics["test_accuracy"])
