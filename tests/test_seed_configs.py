"""Every shipped seed config (and mlp-best) loads, says what it claims, and trains one epoch."""

import json
from pathlib import Path

import pytest

from barenet.app.cli import main
from barenet.config import load_config

CONFIGS = Path(__file__).parent.parent / "configs"
SEEDS = sorted(CONFIGS.glob("seed-*.toml")) + sorted(CONFIGS.glob("mlp-best.toml"))


def test_all_five_seeds_ship():
    assert sorted(p.stem for p in CONFIGS.glob("seed-*.toml")) == [
        f"seed-00{k}" for k in range(5)]


@pytest.mark.parametrize("path", SEEDS, ids=lambda p: p.stem)
def test_config_loads_with_a_description(path):
    config = load_config(path)
    assert config.description.startswith(path.stem)


@pytest.mark.parametrize("path", SEEDS, ids=lambda p: p.stem)
def test_config_trains_one_epoch(path, tiny_data, tmp_path):
    out = tmp_path / path.stem
    # The synthetic set has 600 training images: seed-002's 1,000-image dev set would not fit.
    assert main(["train", "--config", str(path), "--set", "training.epochs=1",
                 "--set", "data.validation=0.1", "--out", str(out), "-q"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and 0.0 <= metrics["test_accuracy"] <= 1.0


def test_recipes_match_the_seeds():
    """The numbers each seed's README gives, as the configs spell them."""
    c = {p.stem: load_config(p) for p in CONFIGS.glob("seed-*.toml")}
    s0 = c["seed-000"]
    assert s0.model.hidden == (256, 128) and s0.model.init == "xavier"
    assert (s0.optimizer.lr, s0.training.batch_size, s0.training.epochs) == (0.001, 128, 100)
    assert s0.data.validation == 0.1
    s1 = c["seed-001"]
    assert s1.model.hidden == (128, 64, 32) and s1.model.init == "xavier"
    assert s1.optimizer.lr == 0.01
    s2 = c["seed-002"]
    assert s2.model.hidden == (10,) and s2.data.validation == 1000
    assert (s2.optimizer.name, s2.optimizer.momentum, s2.optimizer.lr) == ("sgd", 0.0, 0.1)
    assert (s2.training.batch_size, s2.training.epochs) == (0, 500)     # full batch, 500 steps
    s3 = c["seed-003"]
    assert s3.model.hidden == (128,) and s3.optimizer.weight_decay > 0
    assert (s3.optimizer.lr, s3.training.batch_size, s3.training.epochs) == (0.01, 32, 100)
    s4 = c["seed-004"]
    assert s4.model.hidden == (1024,) and s4.model.init == "he"
    o = s4.optimizer
    assert (o.name, o.momentum, o.nesterov, o.lr) == ("sgd", 0.9, False, 0.01)
    assert (o.weight_decay, o.clip_value) == (1e-4, 5.0)
    assert s4.schedule.name == "step" and s4.schedule.milestones == (30, 50, 65)
    assert (s4.training.batch_size, s4.training.epochs) == (128, 80)
    for config in c.values():
        assert config.model.dropout == 0.0 and config.training.label_smoothing == 0.0
        assert config.model.activation == "ReLU"
