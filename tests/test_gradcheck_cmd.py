"""`barenet gradcheck`: every layer, loss and a whole network pass; a wrong backward fails."""

import json

import numpy as np

from barenet.app.cli import main
from barenet.layers import Layer, Parameter
from barenet.registry import LAYERS, LOSSES


def run_json(capsys, *args) -> tuple[int, dict]:
    code = main(["gradcheck", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_everything_passes_and_exits_0(capsys):
    code, report = run_json(capsys)
    assert code == 0 and report["passed"] and report["threshold"] == 1e-6
    checks = report["checks"]
    assert all(row["passed"] and row["relative_error"] < 1e-6 for row in checks)
    layer_checks = {row["check"].split(" (")[0] for row in checks if row["kind"] == "layer"}
    assert layer_checks == set(LAYERS)
    loss_checks = {row["check"].split(",")[0].split(" (")[0]
                   for row in checks if row["kind"] == "loss"}
    assert {"cross_entropy", "mse"} <= loss_checks <= set(LOSSES)
    network = [row for row in checks if row["kind"] == "network"]
    assert network[0]["parameter"] == "input" and len(network) > 10
    cnn = [row for row in network if row["check"].startswith("CNN")]
    assert {"0 Conv2D.W", "1 BatchNorm2d.gamma"} <= {row["parameter"] for row in cnn}
    # Dense and BatchNorm1d report their parameter gradients, not only the input's.
    assert {"W", "b", "gamma", "beta"} <= {row["parameter"] for row in checks}


def test_table_lists_every_layer(capsys):
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    for name in LAYERS:
        assert name in out
    assert "all" in out and "gradient checks passed" in out


class Cube(Layer):
    """x^3 with a deliberately wrong backward (2x instead of 3x^2)."""

    def forward(self, x):
        self._x = x
        return x ** 3

    def backward(self, grad_out, input_grad=True):
        return grad_out * 2.0 * self._x


class Scale(Layer):
    """y = x * s with a learned s per feature; needs a size, as conv layers will."""

    def __init__(self, num_features: int, *, dtype=np.float32):
        self.s = Parameter(np.ones(num_features, dtype=dtype), "s")

    def forward(self, x):
        self._x = x
        return x * self.s.data

    def backward(self, grad_out, input_grad=True):
        (grad_out * self._x).sum(axis=0, out=self.s.grad)
        return grad_out * self.s.data

    def parameters(self):
        return [self.s]


def test_layers_registered_later_are_checked(monkeypatch, capsys):
    monkeypatch.setitem(LAYERS, "Scale", Scale)
    code, report = run_json(capsys)
    assert code == 0
    rows = {row["parameter"]: row for row in report["checks"] if row["check"] == "Scale"}
    assert set(rows) == {"input", "s"} and all(r["passed"] for r in rows.values())


def test_wrong_backward_fails_with_exit_1(monkeypatch, capsys):
    monkeypatch.setitem(LAYERS, "Cube", Cube)
    assert main(["gradcheck"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "1 of" in out and "failed" in out
    code, report = run_json(capsys)
    assert code == 1 and not report["passed"]
    failed = [row for row in report["checks"] if not row["passed"]]
    assert [(row["check"], row["parameter"]) for row in failed] == [("Cube", "input")]


def test_unbuildable_layer_is_a_failure_not_a_crash(monkeypatch, capsys):
    class Odd(Layer):
        def __init__(self, mystery):
            pass

    monkeypatch.setitem(LAYERS, "Odd", Odd)
    code, report = run_json(capsys)
    assert code == 1
    (row,) = [row for row in report["checks"] if row["check"] == "Odd"]
    assert "mystery" in row["error"] and not row["passed"]


def test_threshold_option(capsys):
    code, report = run_json(capsys, "--threshold", "1e-14")
    assert code == 1 and not report["passed"]
