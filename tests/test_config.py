"""Config files: defaults, TOML, --set overrides, and one-line errors naming the key."""

from pathlib import Path

import pytest

from barenet.config import Config, ConfigError, build_model, load_config

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
