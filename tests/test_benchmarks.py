"""Smoke test of the benchmark suite on tiny synthetic data: the code runs, nothing is timed.

No assertion here looks at a duration or a ratio; those figures live in the suite's output.
"""

import json
import sys
from pathlib import Path

import pytest

# benchmarks/ is a top-level folder of the repository, not part of the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common, process  # noqa: E402
from benchmarks.cli import main  # noqa: E402


@pytest.mark.parametrize("no_torch", [True, False], ids=["barenet-alone", "with-torch"])
def test_training_and_inference_cases_run(tiny_data, tmp_path, no_torch):
    if not no_torch:
        pytest.importorskip("torch")
    out = tmp_path / "bench.json"
    cases = ["epoch-sgd", "epoch-adam", "infer-batch", "infer-128", "epoch-cnn",
             "epoch-cnn-best", "epoch-cnn-best-aug", "infer-cnn-best", "augment", "recipe"]
    argv = ["--cases", *cases, "--epochs", "1", "--limit", "256", "--settle", "0",
            "--json", str(out)]
    assert main(argv + (["--no-torch"] if no_torch else [])) == 0
    report = json.loads(out.read_text())
    rows = {r["case"]: r for r in report["results"]}
    assert set(rows) == set(cases)
    for row in rows.values():
        assert row["barenet"] is not None and row["barenet"] > 0
        assert (row["torch"] is None) == no_torch
        assert (row["ratio"] is None) == no_torch
    assert len(rows["epoch-sgd"]["samples"]["barenet"]) == 1
    assert report["machine"]["torch_used"] is not no_torch
    assert "blas" in report["machine"] and "cpu" in report["machine"]


def test_alternate_flips_order_and_uses_own_durations():
    calls = []
    runs = {"a": lambda: calls.append("a"), "b": lambda: (calls.append("b"), 0.5)[1]}
    samples = common.alternate(runs, repeats=3, warmup=1, settle=0.0)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert samples["b"] == [0.5, 0.5, 0.5] and len(samples["a"]) == 3


def test_result_ratio_and_targets():
    r = common.Result("x", "x", "s", barenet=0.8, torch=1.0)
    assert r.ratio == pytest.approx(0.8)
    assert common.check(r.ratio, "<=", 0.85) and not common.check(r.ratio, ">=", 1.0)
    assert common.Result("x", "x", "s", barenet=1.0).ratio is None
    assert common.check(None, "<=", 1.0) is None


def test_subprocess_helpers_run():
    code, seconds, peak_mb = process.run_with_peak_rss([sys.executable, "-c", "pass"])
    assert code == 0 and seconds > 0 and peak_mb > 1
    result = process.startup_case(repeats=1)
    assert result.case == "startup" and result.barenet > 0


def test_cnn_twin_computes_the_same_logits():
    torch = pytest.importorskip("torch")
    import numpy as np
    from benchmarks import cnn

    model = cnn.build_barenet(seed=3)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        twin = cnn.torch_twin(model, torch)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.forward(x), twin, rtol=1e-4, atol=1e-5)


def test_cnn_best_twin_computes_the_same_logits_with_batch_norm_and_dropout():
    torch = pytest.importorskip("torch")
    import numpy as np
    from benchmarks import cnn, cnn_best

    model = cnn_best.build_barenet(seed=3)
    x = np.random.default_rng(0).random((6, 1, 28, 28), dtype=np.float32)
    net = cnn.torch_twin(model, torch)
    model.layers[-2].p = net[-2].p = 0.0                # dropout off, to compare
    with torch.no_grad():
        train_mode = net.train()(torch.from_numpy(x)).numpy()      # batch statistics
    np.testing.assert_allclose(model.train().forward(x), train_mode, rtol=1e-3, atol=1e-4)


def test_torch_augment_with_nothing_to_do_returns_the_images():
    torch = pytest.importorskip("torch")
    import numpy as np
    from benchmarks import cnn_best

    from barenet.config import AugmentConfig

    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    off = cnn_best.TorchAugment(AugmentConfig(), torch)
    np.testing.assert_allclose(off(torch.from_numpy(x)).numpy(), x, atol=1e-5)
    on = cnn_best.TorchAugment(cnn_best.load_config().augment, torch)
    out = on(torch.from_numpy(x)).numpy()
    assert out.shape == x.shape and not np.allclose(out, x)


@pytest.mark.parametrize("model_name", ["mlp", "lenet", "cnn-best"])
def test_profile_covers_every_layer(tiny_data, model_name):
    from benchmarks import profile

    (x, y), test = tiny_data
    parts, total, batches = profile.profile_epochs(epochs=1, data=((x[:256], y[:256]), test),
                                                   model_name=model_name)
    assert batches == 2 and total > 0
    assert any(k.startswith("forward  0") for k in parts)
    assert any(k.startswith("backward 0") for k in parts)
