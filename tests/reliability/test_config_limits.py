"""Configs that cannot fit, cannot run, or are not configs: one ConfigError line, exit 2, no
run directory; every shipped config and sweep still validates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from barenet.app.cli import main
from barenet.config import ConfigError, from_dict, load_config
from conftest import Done, assert_error  # tests/reliability/conftest.py

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
GB = 1000**3


def _run(capsys, *args) -> Done:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return Done(code, out, err)


def _refused(raw_or_sets, *words):
    """Overrides (a list of 'section.key=value' strings) or a raw table for from_dict."""
    with pytest.raises(ConfigError) as info:
        if isinstance(raw_or_sets, list) and all(isinstance(s, str) for s in raw_or_sets):
            load_config(None, raw_or_sets)
        else:
            from_dict(raw_or_sets)
    message = str(info.value)
    assert "\n" not in message and len(message) < 600, message
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    return message


try:
    from barenet import sizing
except ImportError:        # barenet before the size check (the old-code run of these tests)
    sizing = None


@pytest.fixture
def eight_gb(monkeypatch):
    """This machine, as far as the checks can tell, has 8 GB free (deterministic tests)."""
    if sizing is not None:
        monkeypatch.setattr(sizing, "available_memory", lambda: (8 * GB, "MemAvailable"))


# Sizes that cannot fit (issue: model.hidden=[1000000000] died with MemoryError).

DENSE = [{"type": "Dense", "n_in": 784, "n_out": 1_000_000}, {"type": "ReLU"},
         {"type": "Dense", "n_in": 1_000_000, "n_out": 1_000_000}, {"type": "ReLU"},
         {"type": "Dense", "n_in": 1_000_000, "n_out": 10}]
CONV = [{"type": "Conv2D", "in_channels": 1, "out_channels": 200_000, "kernel_size": 3},
        {"type": "GlobalAvgPool2D"}, {"type": "Dense", "n_in": 200_000, "n_out": 10}]


@pytest.mark.parametrize("sets", [
    ["model.hidden=[1000000000]"],
    ["model.layers=[" + ", ".join("{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in
                                                  layer.items()) + "}" for layer in DENSE) + "]"],
    ["model.layers=[{type='Conv2D', in_channels=1, out_channels=200000, kernel_size=3}, "
     "{type='GlobalAvgPool2D'}, {type='Dense', n_in=200000, n_out=10}]"],
    ["model.hidden=[100000]", "training.batch_size=0"],     # full batch x a wide layer
    ["model.hidden=[20000, 20000]", "optimizer.name=adam"],  # parameters + Adam's moments
], ids=["hidden-1e9", "dense-1e6x1e6", "conv-200k-channels", "full-batch-wide",
        "adam-state"])
def test_size_that_cannot_fit_is_refused_before_anything(sets, eight_gb):
    _refused(sets, "needs at least", "8.0 GB available", "MemAvailable")


def test_huge_hidden_via_cli_exit_2_and_no_run_directory(tmp_path, capsys, tiny_data):
    out = tmp_path / "run"
    done = _run(capsys, "train", "--set", "model.hidden=[1000000000]", "--out", out)
    assert_error(done, 2, "model.hidden", "needs at least", "available")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_huge_dense_in_a_config_file_via_cli(tmp_path, capsys, tiny_data):
    path = tmp_path / "big.toml"
    path.write_text("".join("[[model.layers]]\n" + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in layer.items()) for layer in DENSE))
    done = _run(capsys, "train", "--config", path, "--out", tmp_path / "run")
    assert_error(done, 2, "model.layers", "needs at least")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.toml"]


def test_estimate_names_estimate_and_limit_and_what_to_do(eight_gb):
    message = _refused(["model.hidden=[1000000000]"])
    assert "parameters" in message and "smaller" in message and "TB" in message


def test_limit_falls_back_to_a_fixed_bound(monkeypatch):
    """No /proc/meminfo, no sysconf, no cgroup, no rlimit: a generous fixed bound."""
    def no_file(*args, **kwargs):
        raise OSError("not here")
    monkeypatch.setattr("builtins.open", no_file)
    monkeypatch.setattr(sizing.os, "sysconf", lambda name: (_ for _ in ()).throw(ValueError()))
    import resource
    monkeypatch.setattr(resource, "getrlimit", lambda what: (resource.RLIM_INFINITY,) * 2)
    assert sizing.available_memory() == (sizing.UNKNOWN_LIMIT, sizing.available_memory()[1])
    assert "fixed bound" in sizing.available_memory()[1]


def test_limit_reads_this_machine():
    limit, source = sizing.available_memory()
    assert limit > 0 and source


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_fit_a_small_machine(path, monkeypatch):
    """Every shipped config validates with 2 GB free: the check refuses only the absurd."""
    if sizing is not None:
        monkeypatch.setattr(sizing, "available_memory", lambda: (2 * GB, "MemAvailable"))
    load_config(path)


@pytest.mark.parametrize("path", sorted((CONFIGS / "sweeps").glob("*.toml")),
                         ids=lambda p: p.name)
def test_shipped_sweeps_validate(path):
    pytest.importorskip("optuna")
    from barenet.app.sweep_spec import load_spec
    assert load_spec(path).dists


# Configs that are not configs: nested thousands deep, wrong types, impossible values.

@pytest.mark.parametrize("text", [
    "[model]\nhidden = " + "[" * 5000 + "]" * 5000 + "\n",
    "[model]\nhidden = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n",
    "x = " + "[" * 600 + "]" * 600 + "\n",
], ids=["arrays-5000", "inline-tables-3000", "arrays-600"])
def test_toml_nested_deep_is_one_line(tmp_path, capsys, text):
    path = tmp_path / "deep.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path)
    assert_error(_run(capsys, "train", "--config", path, "--out", tmp_path / "run"), 2,
                 "deep.toml", "nested too deeply")
    assert not (tmp_path / "run").exists()


def test_json_nested_deep_through_from_dict():
    raw = json.loads('{"model": {"layers": [{"type": "Dense", "n_in": '
                     + "[" * 900 + "]" * 900 + ', "n_out": 10}]}}')
    _refused(raw, "model.layers", "n_in")


@pytest.mark.parametrize("sets,words", [
    (["training.epochs=true"], ["training.epochs", "integer"]),
    (["training.batch_size=false"], ["training.batch_size", "integer"]),
    (["model.hidden=[true, 8]"], ["model.hidden", "integer"]),
    (["optimizer.lr=nan"], ["optimizer.lr", "finite"]),
    (["optimizer.lr=-inf"], ["optimizer.lr", "finite"]),
    (["optimizer.lr=" + "9" * 400], ["optimizer.lr", "finite"]),
    (["training.seed=" + "9" * 5000], ["training.seed"]),
    (["training.epochs=100000000000000000000"], ["training.epochs", "at most"]),
    (["schedule.milestones=[1e30]"], ["schedule.milestones", "at most"]),
    (["model.hidden=[0]"], ["model.hidden", "positive"]),
    (["model.hidden=[-8]"], ["model.hidden"]),
    (["data.validation=60000"], ["data.validation", "60000"]),
    (["augment.shift=1e300"], ["augment.shift"]),
    (["augment.elastic_sigma=1e300"], ["augment.elastic_sigma"]),
    (["augment.rotate=-5"], ["augment.rotate"]),
    (["model.layers=[{type='Dense', n_in=100, n_out=10}]"], ["n_in = 100", "784"]),
    (["model.layers=[{type='Dense', n_in=784, n_out=5}]"], ["10 classes"]),
    (["model.layers=[{type='Flatten'}, {type='Conv2D', in_channels=1, out_channels=4}]"],
     ["feature map"]),
    (["model.layers=[{type='Conv2D', in_channels=1, out_channels=4}, "
      "{type='Dense', n_in=2704, n_out=10}]"], ["flatten"]),
    (["model.layers=[{type='Conv2D', in_channels=1, out_channels=4, kernel_size='3'}]"],
     ["kernel_size"]),
    (["model.layers=[{type='Conv2D', in_channels=1, out_channels=4, kernel_size=99}]"],
     ["does not fit"]),
    (["model.layers=[{type='Dense', n_in=784, n_out=10, rng=1}]"], ["unknown key 'rng'"]),
    (["model.layers=[{type='Dense', n_in=true, n_out=10}]"], ["n_in", "whole number"]),
    (["model.layers=[{type='BatchNorm1d', num_features=1000000000000}]"], ["num_features"]),
    (["model.layers=[{type='Dense', n_in=784, n_out=10}, {type='Dropout', p=nan}]"], ["p "]),
    (["model.layers=[{type='Nope'}]"], ["unknown type"]),
    (["model.layers=[{type='Dense', n_out=10}]"], ["missing n_in"]),
], ids=lambda v: v[0][:40] if isinstance(v, list) and v and "=" in v[0] else None)
def test_garbage_value_is_one_line_naming_the_key(sets, words):
    _refused(sets, *words)


@pytest.mark.parametrize("raw,words", [
    ({"model": 3}, ["[model] must be a table"]),
    ({"model": {"hidden": [[[[8]]]]}}, ["model.hidden"]),
    ({"model": {1: 2}}, ["model.1"]),
    ([1, 2], ["table of sections"]),
    ({"description": 3}, ["description"]),
], ids=["section-scalar", "hidden-nested", "int-key", "not-a-table", "description-int"])
def test_garbage_structure_is_one_line(raw, words):
    _refused(raw, *words)


def test_set_into_a_section_given_as_a_scalar(tmp_path):
    """[model] replaced by `model = 3` in the file, then --set model.hidden: was TypeError."""
    path = tmp_path / "c.toml"
    path.write_text("model = 3\n")
    with pytest.raises(ConfigError, match=r"\[model\] must be a table"):
        load_config(path, ["model.hidden=[8]"])


def test_endless_config_file_is_not_read_forever():
    """--config /dev/zero: refused after 1 MB. Run in a child limited to 1 GB of address
    space, so a reader without a bound fails fast instead of eating the machine's memory."""
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    code = ("from barenet.config import ConfigError, load_config\n"
            "try:\n    load_config('/dev/zero')\nexcept ConfigError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, preexec_fn=limit, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and "larger than 1 MB" in done.stdout, done.stderr[-300:]


def test_config_not_utf8(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xff\xfe[model]\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_empty_hidden_list_is_softmax_regression():
    """hidden = [] is a real model (784 -> 10 linear classifier): accepted on purpose."""
    from barenet.build import build_model
    model = build_model(load_config(None, ["model.hidden=[]"]), rng=0)
    assert [type(layer).__name__ for layer in model.layers] == ["Dense"]
