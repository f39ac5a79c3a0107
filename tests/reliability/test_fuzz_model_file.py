"""Hypothesis fuzzing of the model-file reader: random bytes, random safetensors headers and
metadata (with and without a valid checksum), random architectures, truncations and bit flips
of a real file. load_model returns a model that predicts, or raises ModelFileError with one
line; never another exception, never a warning, never more memory than the file is worth."""

from __future__ import annotations

import json
import struct
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from barenet import serialize
from barenet.model import Sequential, mlp
from barenet.serialize import FORMAT, ModelFileError, load_model, model_metadata


def _shapes(arch) -> dict:
    """The arrays a description needs, by building it (small sizes only reach here)."""
    if isinstance(arch, dict) and arch.get("type") == "Ensemble":
        return {f"m{i}.{k}": v for i, member in enumerate(arch["members"])
                for k, v in _shapes(member).items()}
    model = Sequential.from_architecture(arch)
    return {k: v.shape for k, v in model.state_arrays().items()}


# Tolerant of a barenet without checksums, so these tests can be run against older code.
CHECKSUM_KEY = getattr(serialize, "CHECKSUM_KEY", "barenet_sha256")


def _digest(header, data) -> str:
    return serialize.digest(header, data) if hasattr(serialize, "digest") else "0" * 64


def to_bytes(arrays, meta) -> bytes:
    if hasattr(serialize, "to_bytes"):
        return serialize.to_bytes(arrays, meta)
    from safetensors.numpy import save
    return save(arrays, metadata={"barenet": json.dumps(meta)})

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
PEAK_BYTES = 32 * 1024 * 1024            # every file here is under 100 kB

_SMALL = mlp(784, [8], 10, batch_norm=True, rng=0)
REAL = to_bytes(_SMALL.state_arrays(), model_metadata(_SMALL, config={"data": {}}))


def load_or_refuse(tmp_path, blob: bytes):
    """load_model on `blob`: a model that predicts, or one ModelFileError line."""
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(blob)
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model, meta = load_model(path)
    except ModelFileError as exc:
        message = str(exc)
        assert message.startswith(str(path)) and "\n" not in message
        return None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < PEAK_BYTES + 20 * len(blob), peak
    assert isinstance(meta, dict)
    members = model.members if hasattr(model, "members") else [model]
    for member in members:                  # loaded means finite: no NaN/inf weight or buffer
        assert all(np.isfinite(a).all() for a in member.state_arrays().values())
    if isinstance(model, Sequential):
        dense = [layer for layer in model.layers if hasattr(layer, "n_in")]
        if dense and all(getattr(layer, "input_ndim", 2) == 2 for layer in model.layers):
            with np.errstate(all="ignore"):         # finite huge weights may overflow
                probs = model.predict_proba(np.zeros((2, dense[0].n_in), np.float32))
            assert probs.shape == (2, dense[-1].n_out)
    return model


@FUZZ
@given(st.binary(max_size=3000))
def test_random_bytes(tmp_path, blob):
    assert load_or_refuse(tmp_path, blob) is None


@FUZZ
@given(st.binary(max_size=600), st.binary(max_size=600))
def test_random_header_bytes_with_a_plausible_length(tmp_path, header, data):
    blob = struct.pack("<Q", len(header) + 1) + b"{" + header + data
    load_or_refuse(tmp_path, blob)


@FUZZ
@given(st.integers(0, len(REAL) - 1))
def test_truncations_of_a_real_file(tmp_path, length):
    assert load_or_refuse(tmp_path, REAL[:length]) is None


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(REAL) - 1), st.integers(0, 7)),
                min_size=1, max_size=3, unique_by=lambda t: t[0]))
def test_bit_flips_of_a_real_file(tmp_path, flips):
    blob = bytearray(REAL)
    for offset, bit in flips:
        blob[offset] ^= 1 << bit
    assert load_or_refuse(tmp_path, bytes(blob)) is None


SIZE = st.one_of(st.integers(1, 6), st.sampled_from([0, -1, 10 ** 7, 2.0, True, "3", None]))
REAL_NUMBER = st.one_of(st.floats(-2, 2), st.sampled_from([float("nan"), float("inf"), -1e308]))
WINDOW = st.one_of(st.integers(0, 4), st.lists(st.integers(0, 3), min_size=1, max_size=3),
                   st.just(10 ** 9))
LAYER = st.one_of(
    st.builds(lambda a, b, bias: {"type": "Dense", "n_in": a, "n_out": b, "init": "he",
                                  **({} if bias else {"bias": False})}, SIZE, SIZE, st.booleans()),
    st.builds(lambda n, eps: {"type": "BatchNorm1d", "num_features": n, "momentum": 0.1,
                              "eps": eps}, SIZE, REAL_NUMBER),
    st.sampled_from([{"type": t} for t in ("ReLU", "Tanh", "GELU", "Softmax", "Flatten",
                                           "Sigmoid", "SiLU", "GlobalAvgPool2D")]),
    st.builds(lambda p: {"type": "Dropout", "p": p}, REAL_NUMBER),
    st.builds(lambda a: {"type": "LeakyReLU", "alpha": a}, REAL_NUMBER),
    st.builds(lambda a, b, k, s: {"type": "Conv2D", "in_channels": a, "out_channels": b,
                                  "kernel_size": k, "stride": s, "padding": 0},
              SIZE, SIZE, WINDOW, WINDOW),
    st.builds(lambda k: {"type": "MaxPool2D", "kernel_size": k, "stride": k, "padding": 0},
              WINDOW),
    st.builds(lambda n: {"type": "BatchNorm2d", "num_features": n}, SIZE),
    st.dictionaries(st.sampled_from(["type", "n_in", "n_out", "x", "init"]),
                    st.one_of(st.integers(-3, 5), st.text(max_size=5), st.none()), max_size=4),
    st.sampled_from([None, 3, "Dense", [], {"type": "Pickle"}]),
)
JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                              st.text(max_size=8)),
                    lambda inner: st.one_of(st.lists(inner, max_size=3),
                                            st.dictionaries(st.text(max_size=6), inner,
                                                            max_size=3)), max_leaves=10)
DTYPE = st.sampled_from(["F32", "F32", "F32", "F64", "F16", "I8", "U8", "BOOL", "U64", "BF16",
                         "f32", ""])


@st.composite
def mlp_specs(draw):
    """A description of a working MLP: Dense sizes that chain, optional extras between."""
    sizes = draw(st.lists(st.integers(1, 6), min_size=2, max_size=4))
    spec = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        spec.append({"type": "Dense", "n_in": a, "n_out": b, "init": "he"})
        if draw(st.booleans()):
            spec.append({"type": "BatchNorm1d", "num_features": b, "momentum": 0.1,
                         "eps": 1e-5})
        spec.append(draw(st.sampled_from([{"type": "ReLU"}, {"type": "Tanh"},
                                          {"type": "Dropout", "p": 0.2},
                                          {"type": "LeakyReLU", "alpha": 0.1}])))
    return spec


ASPECTS = ["format", "version", "checksum", "meta-field", "dtype", "offsets", "extra-tensor",
           "values", "architecture"]


@st.composite
def model_files(draw):
    """A safetensors file built field by field. Up to two aspects (ASPECTS) are broken at
    random, the rest are right, so the reader is driven past each check in turn."""
    broken = draw(st.sets(st.sampled_from(ASPECTS), max_size=2))
    if "architecture" in broken:
        arch = draw(st.one_of(
            st.lists(LAYER, max_size=5), JSON,
            st.builds(lambda members, w: {"type": "Ensemble", "members": members, "weights": w},
                      st.lists(st.lists(LAYER, max_size=3), max_size=2),
                      st.one_of(st.none(), st.lists(REAL_NUMBER, max_size=2)))))
    elif draw(st.booleans()):
        arch = draw(mlp_specs())
    else:
        arch = {"type": "Ensemble", "members": draw(st.lists(mlp_specs(), min_size=1,
                                                             max_size=2))}
    try:
        shapes = _shapes(arch) if "architecture" not in broken else {}
    except (ValueError, TypeError, KeyError, AttributeError):
        shapes = {}
    if "extra-tensor" in broken:
        shapes = {**shapes, **draw(st.dictionaries(st.sampled_from(["0.W", "0.b", "9.W", "x"]),
                                                   st.lists(st.integers(0, 5), max_size=3)
                                                   .map(tuple), min_size=1, max_size=2))}
    header, data, offset = {}, b"", 0
    for name, shape in shapes.items():
        dtype = draw(DTYPE) if "dtype" in broken else "F32"
        size = {"F64": 8, "U64": 8, "I8": 1, "U8": 1, "BOOL": 1}.get(dtype, 4 if dtype else 2)
        n = min(int(np.prod(shape)) * size, 4096)
        if dtype == "F32" and "values" not in broken:
            values = draw(st.lists(st.floats(-3, 3, width=32), min_size=n // 4,
                                   max_size=n // 4))
            chunk = np.asarray(values, "<f4").tobytes()
        elif dtype == "F32":
            values = draw(st.lists(st.floats(width=32), min_size=n // 4, max_size=n // 4))
            chunk = np.asarray(values, "<f4").tobytes()
        else:
            chunk = draw(st.binary(min_size=n, max_size=n))
        shift = draw(st.sampled_from([0, 4, -4, 1])) if "offsets" in broken else 0
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(chunk) + shift]}
        data += chunk
        offset += len(chunk)
    meta = {"format": draw(st.sampled_from(["other", "", None])) if "format" in broken
            else FORMAT,
            "format_version": draw(st.sampled_from([1, 0, -7, "1", 4, None, 2.0, True]))
            if "version" in broken else serialize.FORMAT_VERSION,
            "architecture": arch}
    if "meta-field" in broken:
        for field in draw(st.lists(st.sampled_from(["config", "history", "metrics",
                                                    "checkpoint", "members", "preprocessing",
                                                    "barenet_version"]), max_size=3)):
            meta[field] = draw(JSON)
    header["__metadata__"] = {"barenet": json.dumps(meta)}
    checksum = draw(st.sampled_from(["wrong", "none"])) if "checksum" in broken else "right"
    if checksum != "none":
        digest = _digest(header, data)
        header["__metadata__"][CHECKSUM_KEY] = digest if checksum == "right" else digest[::-1]
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


@FUZZ
@given(model_files())
def test_random_model_files(tmp_path, blob):
    load_or_refuse(tmp_path, blob)


@pytest.mark.parametrize("hidden", [[3], [5, 4]])
def test_the_fuzzed_writer_makes_loadable_files(tmp_path, hidden):
    """The generator can produce good files too: the properties above are not vacuous."""
    model = mlp(6, hidden, 3, rng=0)
    assert load_or_refuse(tmp_path, to_bytes(model.state_arrays(), model_metadata(model)))
