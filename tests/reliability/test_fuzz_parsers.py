"""Hypothesis fuzzing of the IDX parser and the config parser (bounded: seconds each).

parse_idx: any bytes give an array that accounts for every byte, or ValueError; a header
declaring huge dimensions allocates nothing. Configs: any table, TOML text or --set value
gives a Config or a one-line ConfigError, never another exception.
"""

from __future__ import annotations

import math
import string
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from barenet import sizing
from barenet.config import (
    _SECTION_CLASSES,
    Config,
    ConfigError,
    from_dict,
    load_config,
    parse_toml,
)
from barenet.data.idx import parse_idx

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# IDX

@st.composite
def idx_bytes(draw) -> bytes:
    """A plausible header (right or wrong magic, any type byte, 0-255 dims of any size) and
    a body that is often exactly right, often a little short or long."""
    magic = draw(st.sampled_from([b"\x00\x00", b"\x00\x01", b"\xff\x00"]))
    kind = draw(st.sampled_from([0x08, 0x08, 0x08, 0x09, 0x0D, 0x00]))
    ndim = draw(st.one_of(st.integers(0, 4), st.integers(0, 255)))
    dims = draw(st.lists(st.one_of(st.integers(0, 6), st.integers(0, 2**32 - 1)),
                         min_size=ndim, max_size=ndim))
    header = magic + bytes([kind, ndim]) + b"".join(struct.pack(">I", d) for d in dims)
    size = math.prod(dims)
    body_len = draw(st.one_of(
        st.just(size) if size <= 4096 else st.integers(0, 64),
        st.integers(0, 64),
        st.just(max(size - 1, 0)) if size <= 4096 else st.integers(0, 8)))
    cut = draw(st.integers(0, len(header)))
    full = header + bytes(draw(st.binary(min_size=body_len, max_size=body_len)))
    return draw(st.sampled_from([full, full[:cut], full + b"\x00"]))


@FAST
@given(idx_bytes())
def test_idx_parser_accounts_for_every_byte_or_says_why(data):
    try:
        array = parse_idx(data)
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert array.dtype == np.uint8
    assert 4 + 4 * array.ndim + array.size == len(data)


@FAST
@given(st.binary(max_size=300))
def test_idx_parser_on_random_bytes(data):
    try:
        array = parse_idx(bytearray(data))
    except ValueError:
        return
    assert 4 + 4 * array.ndim + array.size == len(data)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(2**20, 2**32 - 1), min_size=1, max_size=255))
def test_huge_declared_dims_allocate_nothing(dims):
    """A 1 kB header claiming 2^32 x 2^32 x ... bytes: refused without a large allocation."""
    data = bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="truncated"):
            parse_idx(data + b"\x00" * 16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


# Configs

@pytest.fixture(autouse=True)
def small_machine(monkeypatch):
    """64 MB free: any network the fuzzer makes that passes the size check is built in
    milliseconds (validation builds it once)."""
    monkeypatch.setattr(sizing, "available_memory", lambda: (64 << 20, "MemAvailable"))


SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(2**70), 2**70), st.integers(-3, 1000),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1),
    st.text(max_size=12), st.sampled_from(["ReLU", "adam", "sgd", "cosine", "mnist", "he"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
KEYS = sorted({f.name for cls in _SECTION_CLASSES.values()
               for f in cls.__dataclass_fields__.values()})
LAYER_KEYS = sorted({k for _, checkers in sizing.SCHEMA.values() for k in checkers})
LAYER_VALUES = st.one_of(st.integers(-2, 40), st.integers(0, 2**40), st.booleans(),
                         st.floats(-1, 2), st.none(), st.just("he"), st.text(max_size=4),
                         st.lists(st.integers(0, 6), max_size=3))
LAYER = st.builds(lambda kind, extra: {"type": kind, **extra},
                  st.sampled_from(sorted(sizing.SCHEMA) + ["Nope"]),
                  st.dictionaries(st.sampled_from(LAYER_KEYS), LAYER_VALUES, max_size=4))
SECTION = st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)),
                          VALUES, max_size=4)
RAW = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(list(_SECTION_CLASSES)), st.text(max_size=6)),
                    st.one_of(SECTION, VALUES), max_size=4),
    st.builds(lambda layers: {"model": {"layers": layers}}, st.lists(LAYER, max_size=6)),
    VALUES)


def _config_or_one_line(build):
    try:
        config = build()
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc) and len(str(exc)) < 1000, str(exc)
        return None
    assert isinstance(config, Config)
    return config


@FAST
@given(RAW)
def test_from_dict_gives_config_or_config_error(raw):
    _config_or_one_line(lambda: from_dict(raw))


@FAST
@given(st.lists(LAYER, min_size=1, max_size=8))
def test_layer_lists_give_config_or_config_error(layers):
    config = _config_or_one_line(lambda: from_dict({"model": {"layers": layers}}))
    if config is not None:                   # what validates also builds and runs
        from barenet.build import build_model
        model = build_model(config, rng=0)
        assert model.predict_proba(np.zeros((2, 28, 28), np.uint8)).shape == (2, 10)


TOMLISH = st.text(alphabet=string.ascii_letters[:6] + string.digits + "[]{}=.,\"' \n-+_",
                  max_size=80)


@FAST
@given(st.sampled_from(["model.hidden", "optimizer.lr", "training.epochs", "model.layers",
                        "augment.rotate", "x.y", "model", ""]), TOMLISH)
def test_set_values_give_config_or_config_error(key, value):
    _config_or_one_line(lambda: load_config(None, [f"{key}={value}"]))


@FAST
@given(st.one_of(TOMLISH, st.builds(lambda n, open_, close: open_ * n + close * n,
                                    st.integers(0, 3000), st.sampled_from(["[", "{a=", "["]),
                                    st.sampled_from(["]", "}", ""]))))
def test_toml_text_gives_config_or_config_error(text):
    def build():
        return from_dict(parse_toml(f"[model]\nhidden = {text}\n", "fuzz"))
    _config_or_one_line(build)


@st.composite
def conv_nets(draw) -> list[dict]:
    """Conv/pool stacks with random kernels, strides and paddings, often not fitting 28x28;
    a GlobalAvgPool2D and Dense(C, 10) or a Flatten and a guessed Dense end them."""
    layers, channels = [], 1
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            out = draw(st.integers(1, 6))
            layers.append({"type": "Conv2D", "in_channels": channels, "out_channels": out,
                           "kernel_size": draw(st.one_of(st.integers(1, 9),
                                                         st.lists(st.integers(1, 9),
                                                                  min_size=2, max_size=2))),
                           "stride": draw(st.integers(1, 4)),
                           "padding": draw(st.integers(0, 3)),
                           "bias": draw(st.booleans())})
            channels = out
        else:
            layers.append({"type": draw(st.sampled_from(["MaxPool2D", "AvgPool2D"])),
                           "kernel_size": draw(st.integers(1, 4)),
                           "stride": draw(st.integers(1, 3)), "padding": draw(st.integers(0, 2))})
        if draw(st.booleans()):
            layers.append({"type": draw(st.sampled_from(["BatchNorm2d", "ReLU", "Dropout2d"]))})
            if layers[-1]["type"] == "BatchNorm2d":
                layers[-1]["num_features"] = channels
    if draw(st.booleans()):
        layers += [{"type": "GlobalAvgPool2D"}, {"type": "Dense", "n_in": channels, "n_out": 10}]
    else:
        layers += [{"type": "Flatten"},
                   {"type": "Dense", "n_in": draw(st.integers(1, 4000)), "n_out": 10}]
    return layers


@FAST
@given(conv_nets())
def test_what_the_shape_walk_accepts_runs(layers):
    """sizing.walk follows shapes as the layers compute them: a network it accepts runs on
    two 28x28 images and gives (2, 10); one it refuses names the layer."""
    config = _config_or_one_line(lambda: from_dict({"model": {"layers": layers}}))
    if config is None:
        return
    from barenet.build import build_model
    model = build_model(config, rng=0)
    assert model.predict_proba(np.zeros((2, 28, 28), np.uint8)).shape == (2, 10)
    model.train()
    assert model.forward(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)
