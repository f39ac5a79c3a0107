"""Config files: defaults, TOML, --set overrides, and one-line errors naming the key."""

from pathlib import Path

import pytest

from barenet.build import build_model
from barenet.config import Config, ConfigError, load_config

CONFIGS = Path(__file__).parent.parent / "configs"


def test_default_toml_equals_builtin_defaults():
    loaded = load_config(CONFIGS / "default.toml")
    assert {**loaded.to_dict(), "description": ""} == Config().to_dict()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = load_config(path)
    build_model(config, rng=0)


def test_overrides_parse_toml_values():
    c = load_config(None, ["optimizer.lr=0.01", "model.hidden=[64, 32]", "optimizer.name=adam",
                           "model.batch_norm=true"])
    assert c.optimizer.lr == 0.01 and c.model.hidden == (64, 32)
    assert c.optimizer.name == "adam" and c.model.batch_norm is True


@pytest.mark.parametrize("override,key", [
    ("optimizer.lr=0", "optimizer.lr"),
    ("model.dropout=1.0", "model.dropout"),
    ("model.hidden=[0]", "model.hidden"),
    ("training.batch_size=-5", "training.batch_size"),
    ("training.epochs=2.5", "training.epochs"),
    ("optimizer.name=lbfgs", "optimizer.name"),
    ("model.widht=3", "model.widht"),
    ("optimizer.lr=fast", "optimizer.lr"),
    ("augment.scale=-1", "augment.scale"),
    ("model.layers=[{type='Nope'}]", "model.layers"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert key in message and "\n" not in message


def test_bad_toml_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nhidden = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[modle]\nhidden = [3]\n")
    with pytest.raises(ConfigError, match="modle"):
        load_config(unknown)


def test_layers_list_builds_any_sequential(tmp_path):
    path = tmp_path / "net.toml"
    path.write_text('[[model.layers]]\ntype = "Dense"\nn_in = 784\nn_out = 16\n'
                    '[[model.layers]]\ntype = "Tanh"\n'
                    '[[model.layers]]\ntype = "Dense"\nn_in = 16\nn_out = 10\n')
    model = build_model(load_config(path), rng=0)
    assert [type(layer).__name__ for layer in model.layers] == ["Dense", "Tanh", "Dense"]


def test_choices_come_from_the_registries():
    from barenet import registry
    from barenet.config import CHOICES
    assert CHOICES["model.activation"] == tuple(registry.ACTIVATIONS)
    assert CHOICES["model.init"] == tuple(sorted(registry.INITIALIZERS))
    assert CHOICES["optimizer.name"] == tuple(registry.OPTIMIZERS)
    assert CHOICES["schedule.name"] == tuple(registry.SCHEDULES)
    assert CHOICES["training.loss"] == tuple(registry.LOSSES)


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam", "adamw"])
def test_build_optimizer_passes_the_keys_its_class_lists(name):
    from barenet.build import build_optimizer
    from barenet.registry import OPTIMIZERS
    c = load_config(None, [f"optimizer.name={name}", "optimizer.lr=0.05", "optimizer.eps=1e-6",
                           "optimizer.momentum=0.5", "optimizer.weight_decay=0.01",
                           "optimizer.clip_norm=2", "optimizer.betas=[0.8, 0.9]"])
    optimizer = build_optimizer(c, build_model(c, rng=0).parameters())
    assert type(optimizer) is OPTIMIZERS[name] and optimizer.options
    assert optimizer.lr == 0.05 and optimizer.weight_decay == 0.01
    assert optimizer.clip_norm == 2.0 and optimizer.clip_value is None      # 0 = off
    for key in optimizer.options:
        assert getattr(optimizer, key) == getattr(c.optimizer, key), key


@pytest.mark.parametrize("name", ["none", "step", "exponential", "cosine", "onecycle",
                                  "plateau"])
def test_build_schedule_takes_its_arguments_from_the_config(name):
    from barenet.build import build_schedule
    from barenet.optim import CosineWarmup, ReduceOnPlateau, StepDecay
    from barenet.registry import SCHEDULES
    c = load_config(None, [f"schedule.name={name}", "schedule.milestones=[2, 5]",
                           "schedule.gamma=0.5", "schedule.patience=4", "training.epochs=7"])
    schedule, plateau = build_schedule(c)
    built = plateau if name == "plateau" else schedule
    assert (built is None) if SCHEDULES[name] is None else type(built) is SCHEDULES[name]
    assert (plateau is None) == (name != "plateau")
    if isinstance(built, StepDecay):
        assert built.milestones == [2, 5] and built.gamma == 0.5
    if isinstance(built, CosineWarmup):
        assert built.epochs == 7.0
    if isinstance(built, ReduceOnPlateau):
        assert built.reduce_by == 0.5 and built.patience == 4


def test_build_loss_smooths_cross_entropy_only():
    import numpy as np

    from barenet.build import build_loss
    from barenet.losses import mean_squared_error, softmax_cross_entropy
    logits, labels = np.zeros((2, 4)), np.array([0, 1])
    assert build_loss(Config()) is softmax_cross_entropy
    smooth = build_loss(load_config(None, ["training.label_smoothing=0.1"]))
    assert smooth(logits, labels)[0] == softmax_cross_entropy(logits, labels)[0]  # uniform
    assert not np.array_equal(smooth(logits + np.eye(4)[labels], labels)[1],
                              softmax_cross_entropy(logits + np.eye(4)[labels], labels)[1])
    mse = ["training.loss=mse", "training.label_smoothing=0.1"]
    assert build_loss(load_config(None, mse)) is mean_squared_error


@pytest.mark.parametrize("key", ["shift", "rotate", "scale", "elastic_alpha", "flip", "erase",
                                 "elastic_sigma", "erase_area"])
def test_augment_enabled_agrees_with_the_augmenter(key):
    import dataclasses

    from barenet.config import AugmentConfig
    from barenet.data.augment import changes_images
    value = {"elastic_sigma": 2.0, "erase_area": 0.5, "rotate": 10.0}.get(key, 0.2)
    a = dataclasses.replace(AugmentConfig(), **{key: value})
    assert a.enabled == changes_images(a)
    assert not AugmentConfig().enabled
