"""Model files and checkpoints as input: integrity (checksum), refusal before allocation,
dtypes, versions, NaN/inf, metadata of the wrong type, ensemble weights (issue 15, classes
1, 2, 3 and 5). Every refusal is one line, exit 2, and changes nothing of the user's."""

from __future__ import annotations

import json
import os
import resource
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from barenet import serialize
from barenet.app.cli import main
from barenet.ensemble import Ensemble, save_ensemble
from barenet.model import mlp
from barenet.serialize import ModelFileError, load_arrays, load_model, model_metadata
from conftest import FAKE, Done, assert_error, cli, snapshot, stray_files

# Tolerant of a barenet without checksums, so these tests can be run against older code.
to_bytes = getattr(serialize, "to_bytes", None)
CHECKSUM_KEY = getattr(serialize, "CHECKSUM_KEY", "barenet_sha256")

MEMORY_LIMIT = 1536 * 1024 * 1024          # address space of the child: far below 4.7 GB


def _model(batch_norm: bool = False):
    return mlp(784, [16], 10, batch_norm=batch_norm, rng=0)


def _meta(model, **extra) -> dict:
    return model_metadata(model, config={"data": {"dataset": "mnist"}}, **extra)


def write(path: Path, arrays: dict, meta: dict, *, checksum: bool = True) -> Path:
    """A model file with a valid checksum (checksum=False: as barenet wrote before it)."""
    if checksum and to_bytes is not None:
        path.write_bytes(to_bytes(arrays, meta))
    else:
        path.write_bytes(save({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                              metadata={"barenet": json.dumps(meta)}))
    return path


def run_main(capsys, *args) -> Done:
    """`barenet ARGS` in this process (fast); the same checks as a child's."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return Done(code, out, err)


def limited(*args, timeout: float = 120) -> Done:
    """`barenet ARGS` in a child whose address space is capped at MEMORY_LIMIT."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    env = {**os.environ, "BARENET_OFFLINE": "1", "NO_COLOR": "1", "OPENBLAS_NUM_THREADS": "1"}
    env.pop("BARENET_DEBUG", None)
    done = subprocess.run([sys.executable, str(FAKE), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, preexec_fn=cap,
                          stdin=subprocess.DEVNULL)
    return Done(done.returncode, done.stdout, done.stderr)


def flip(path: Path, offset: int, bit: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 1 << bit
    path.write_bytes(bytes(raw))


def data_start(path: Path) -> int:
    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    # A constant rate, so `--resume --epochs 3` may extend the run: old code trained on.
    done = cli("train", "--out", out, "--epochs", 2, "--quiet", "--set", 'schedule.name="none"')
    assert done.code == 0, done.err
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


# 1. Integrity: a flipped bit anywhere is refused, and --resume changes nothing.

def test_resume_refuses_a_weight_flipped_to_2e37(run_copy):
    """The issue's case: one bit turns an output bias of ~0.05 into ~2e37; old code trained
    on from it (the loss stays finite) and exited 0."""
    path = run_copy / "checkpoint.safetensors"
    arrays, _ = load_arrays(path)
    start = data_start(path)
    header = json.loads(path.read_bytes()[8:start])
    bias = max((k for k in arrays if k.endswith(".b") and "." not in k[:-2]),
               key=lambda k: int(k.split(".")[0]))             # the output layer's
    begin = header[bias]["data_offsets"][0]
    w = arrays[bias].ravel()
    k = int(np.flatnonzero((np.abs(w) > 0.01) & (np.abs(w) < 1))[0])
    flip(path, start + begin + 4 * k + 3, 6)          # float32 bit 30: the exponent's top
    huge = np.frombuffer(path.read_bytes(), "<f4", 1, start + begin + 4 * k)[0]
    assert abs(huge) > 1e36
    before = snapshot(run_copy)
    done = cli("train", "--resume", run_copy, "--epochs", 3)
    assert_error(done, 2, "checkpoint.safetensors", "damaged (checksum mismatch)")
    assert snapshot(run_copy) == before and stray_files(run_copy) == []


@pytest.mark.parametrize("where", ["length", "tensor-index", "meta-key", "meta-history",
                                   "data-first", "data-middle", "data-last"])
def test_resume_refuses_a_flipped_bit(run_copy, where):
    path = run_copy / "checkpoint.safetensors"
    raw = path.read_bytes()
    start = data_start(path)
    header = raw[8:start]
    offset = {"length": 1, "tensor-index": 8 + header.index(b"data_offsets") + 15,
              "meta-key": 8 + header.index(b"barenet_version"),
              "meta-history": 8 + header.index(b"val_accuracy"),
              "data-first": start, "data-middle": (start + len(raw)) // 2,
              "data-last": len(raw) - 1}[where]
    flip(path, offset, 0)
    before = snapshot(run_copy)
    done = cli("train", "--resume", run_copy, "--epochs", 3)
    assert_error(done, 2, "checkpoint.safetensors", "damaged")
    assert snapshot(run_copy) == before and stray_files(run_copy) == []


def test_evaluate_refuses_a_flipped_bit_in_every_region(tmp_path, tiny_data, capsys):
    model = _model()
    good = write(tmp_path / "good.safetensors", model.state_arrays(), _meta(model))
    size, start = good.stat().st_size, data_start(good)
    for offset in (20, start // 2, start - 10, start, start + 5, size // 2, size - 1):
        bad = tmp_path / f"bad{offset}.safetensors"
        shutil.copy(good, bad)
        flip(bad, offset, 2)
        if bad.read_bytes()[offset:offset + 1] in b' "\\':    # a flip into JSON syntax
            continue
        done = run_main(capsys, "evaluate", bad, "--json")
        assert_error(done, 2, str(bad), "damaged")
        assert done.out == ""


def test_every_single_bit_of_the_header_is_covered(tmp_path):
    """Each of the header's bits, flipped alone, is refused (checksum or structure)."""
    model = mlp(4, [3], 2, rng=0)
    path = write(tmp_path / "small.safetensors", model.state_arrays(), _meta(model))
    raw = path.read_bytes()
    refused = 0
    for offset in range(data_start(path)):
        for bit in range(8):
            bad = bytearray(raw)
            bad[offset] ^= 1 << bit
            path.write_bytes(bytes(bad))
            with pytest.raises(ModelFileError):
                load_arrays(path)
            refused += 1
    assert refused == 8 * data_start(path)


def test_files_without_checksum_still_load(tmp_path, tiny_data, capsys):
    """Files written before the checksum (format 1) load as before, without a warning;
    one claiming format 2 without it is damaged."""
    model = _model()
    old = write(tmp_path / "old.safetensors", model.state_arrays(),
                {**_meta(model), "format_version": 1}, checksum=False)
    loaded, meta = load_model(old)
    x = tiny_data[1][0][:20]
    assert np.array_equal(loaded.predict_proba(x), model.eval().predict_proba(x))
    done = run_main(capsys, "evaluate", old, "--json")
    assert done.code == 0 and done.err == ""
    missing = write(tmp_path / "missing.safetensors", model.state_arrays(), _meta(model),
                    checksum=False)
    assert_error(run_main(capsys, "evaluate", missing), 2, "damaged", "checksum is missing")


def test_shipped_models_carry_a_checksum():
    for name in ("cnn", "mlp"):
        path = Path(__file__).parents[2] / "src" / "barenet" / "models" / f"{name}.safetensors"
        header = json.loads(path.read_bytes()[8:data_start(path)])
        assert CHECKSUM_KEY in header["__metadata__"]
        load_model(path)


# 2. Resource exhaustion: refused before anything large is allocated or read.

@pytest.mark.parametrize("layer", [
    {"type": "Dense", "n_in": 20000, "n_out": 20000},           # 1.6 GB of weights claimed
    {"type": "Dense", "n_in": 1000000, "n_out": 1000000},
    {"type": "Conv2D", "in_channels": 1, "out_channels": 10 ** 12, "kernel_size": 3},
])
def test_a_huge_architecture_claim_is_refused_before_allocating(tmp_path, layer):
    model = _model()
    arch = model.architecture()
    arch[0] = layer
    path = write(tmp_path / "claims.safetensors", model.state_arrays(),
                 {**_meta(model), "architecture": arch})
    assert path.stat().st_size < 200_000
    done = limited("evaluate", path)
    assert "MemoryError" not in done.err
    assert_error(done, 2, str(path), "architecture")


def test_a_header_claiming_huge_tensors_is_refused_before_allocating(tmp_path):
    """The tensor index itself claims 20000x20000 (and a checksum that matches)."""
    model = _model()
    path = write(tmp_path / "m.safetensors", model.state_arrays(), _meta(model))
    raw = path.read_bytes()
    start = data_start(path)
    header = json.loads(raw[8:start])
    header["0.W"]["shape"] = [20000, 20000]
    header["0.W"]["data_offsets"][1] = header["0.W"]["data_offsets"][0] + 4 * 20000 ** 2
    header["__metadata__"][CHECKSUM_KEY] = serialize.digest(header, raw[start:])
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[start:])
    done = limited("evaluate", path)
    assert_error(done, 2, str(path), "0.W", "does not fit")


def test_a_good_model_evaluates_under_the_same_memory_cap(tmp_path):
    """The cap above is not what refuses: a real model evaluates within it."""
    model = _model()
    path = write(tmp_path / "good.safetensors", model.state_arrays(), _meta(model))
    done = limited("evaluate", path, "--json")
    assert done.code == 0, done.err
    assert 0 <= json.loads(done.out)["accuracy"] <= 1


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "sparse-2GB"])
def test_evaluate_of_an_endless_or_huge_file_reads_nothing(tmp_path, kind):
    if kind == "/dev/zero":
        path = Path("/dev/zero")
        words = ["not a regular file"]
    elif kind == "fifo":
        path = tmp_path / "pipe.safetensors"
        os.mkfifo(path)                  # opening it would wait for a writer forever
        words = ["not a regular file"]
    else:
        path = tmp_path / "sparse.safetensors"
        with open(path, "wb") as f:
            f.truncate(2 * 1024 ** 3)
        words = ["more than a barenet model file can be"]
    done = limited("evaluate", path, timeout=60)
    assert_error(done, 2, str(path), *words)


# 3. Silent acceptance: dtypes, versions, NaN/inf, metadata types, ensemble weights.

@pytest.mark.parametrize("dtype", [np.int8, np.bool_, np.uint64, np.float16, np.int32])
def test_weights_of_another_dtype_are_refused_by_name(tmp_path, tiny_data, capsys, dtype):
    model = _model()
    arrays = model.state_arrays()
    arrays["2.W"] = (arrays["2.W"] > 0).astype(dtype)
    path = write(tmp_path / "typed.safetensors", arrays, _meta(model))
    code = np.dtype(dtype)
    name = {"i": "I", "u": "U", "f": "F", "b": "BOOL"}[code.kind] + (
        "" if code.kind == "b" else str(8 * code.itemsize))
    done = run_main(capsys, "evaluate", path)
    assert_error(done, 2, "tensor 2.W", f"stored as {name}", "float32")
    assert done.out == ""


@pytest.mark.parametrize("version, words", [
    (-7, "positive whole number"), (0, "positive whole number"),
    ("1", "positive whole number"), (1.5, "positive whole number"),
    (True, "positive whole number"), (None, "positive whole number"),
    (4, "newer than this barenet reads"),
])
def test_format_versions(tmp_path, tiny_data, capsys, version, words):
    model = _model()
    path = write(tmp_path / "v.safetensors", model.state_arrays(),
                 {**_meta(model), "format_version": version})
    done = run_main(capsys, "evaluate", path)
    line = assert_error(done, 2, str(path), words)
    assert ("newer" in line) == (version == 4)


@pytest.mark.parametrize("tensor, value", [("0.W", np.nan), ("0.b", np.inf),
                                           ("1.running_var", np.nan),
                                           ("1.running_mean", -np.inf), ("3.W", np.nan)])
def test_nan_or_inf_in_weights_or_buffers_is_refused_by_name(tmp_path, tiny_data, capsys,
                                                             tensor, value):
    model = _model(batch_norm=True)
    arrays = {k: v.copy() for k, v in model.state_arrays().items()}
    arrays[tensor].flat[3] = value
    path = write(tmp_path / "nan.safetensors", arrays, _meta(model))
    done = run_main(capsys, "evaluate", path, "--json")
    assert_error(done, 2, f"tensor {tensor}", "NaN or infinite")
    assert done.out == ""
    done = run_main(capsys, "predict", path, "--index", "0")
    assert_error(done, 2, f"tensor {tensor}")
    assert "nan" not in done.out.lower()


def test_weights_so_large_their_outputs_overflow_are_refused(tmp_path, tiny_data, capsys):
    """Finite but huge weights in a file without a checksum: no nan% and no bare NaN."""
    model = _model()
    arrays = {k: v.copy() for k, v in model.state_arrays().items()}
    arrays["2.W"][:] = 3e38
    path = write(tmp_path / "huge.safetensors", arrays, {**_meta(model), "format_version": 1},
                 checksum=False)
    done = run_main(capsys, "predict", path, "--index", "0")
    assert_error(done, 2, "not finite")
    assert "nan" not in done.out.lower()
    done = cli("evaluate", path, "--json")            # a child: Python warnings reach stderr
    assert_error(done, 2, "not finite")
    assert "Warning" not in done.err and done.out == ""


def test_evaluate_json_is_strict_json(tmp_path, tiny_data, capsys):
    model = _model()
    path = write(tmp_path / "m.safetensors", model.state_arrays(), _meta(model))
    done = run_main(capsys, "evaluate", path, "--json")
    assert done.code == 0

    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")
    report = json.loads(done.out, parse_constant=refuse)
    assert 0 <= report["accuracy"] <= 1


@pytest.mark.parametrize("field, value, words", [
    ("config", [1, 2], "config is a list, not a table"),
    ("config", "mnist", "config is a string, not a table"),
    ("config", {"data": "mnist"}, "config.data is a string, not a table"),
    ("config", {"data": {"dataset": 7}}, "config.data.dataset is a number"),
    ("config", {"data": None}, "config.data is a null, not a table"),
    ("config", {"data": {"dataset": None}}, "config.data.dataset is a null"),
    ("architecture", "Dense", "architecture is a string"),
    ("history", {"loss": 1}, "history is a table, not a list"),
    ("history", [1, 2], "history holds rows that are not tables"),
    ("metrics", [0.9], "metrics is a list, not a table"),
    ("metrics", {"test_accuracy": "high"}, "metrics.test_accuracy is a string"),
])
def test_metadata_of_the_wrong_type_is_one_line(tmp_path, tiny_data, capsys, field, value,
                                                 words):
    model = _model()
    path = write(tmp_path / "meta.safetensors", model.state_arrays(),
                 {**_meta(model), field: value})
    assert_error(run_main(capsys, "evaluate", path), 2, str(path), "damaged metadata", words)
    assert_error(run_main(capsys, "predict", path, "--index", "1"), 2, words)


@pytest.mark.parametrize("change, words", [
    ({"n_in": 784.0}, "n_in must be a whole number"),
    ({"n_in": True}, "n_in must be a whole number"),
    ({"n_out": -16}, "n_out must be a whole number"),
    ({"n_out": "16"}, "n_out must be a whole number"),
    ({"type": "Pickle"}, "unknown layer type"),
    ({"n_out": 20}, "takes 16 inputs but the layer before gives 20"),
])
def test_architectures_out_of_bounds_or_not_fitting_are_refused(tmp_path, tiny_data, capsys,
                                                                change, words):
    model = _model()
    arch = model.architecture()
    arch[0] = {**arch[0], **change}
    arrays = model.state_arrays()
    if change == {"n_out": 20}:          # arrays that match, layers that do not fit together
        arrays = {**arrays, "0.W": np.zeros((784, 20), np.float32),
                  "0.b": np.zeros(20, np.float32)}
    path = write(tmp_path / "arch.safetensors", arrays, {**_meta(model), "architecture": arch})
    assert_error(run_main(capsys, "evaluate", path), 2, str(path), words)


@pytest.mark.parametrize("weights", [[float("nan"), 1.0], [float("inf"), 1.0], [-1.0, 2.0],
                                     ["a", 1.0], [0.0, 0.0]])
def test_ensemble_weights_must_be_finite_and_non_negative(tmp_path, tiny_data, capsys,
                                                          weights):
    with pytest.raises(ValueError, match="finite, non-negative"):
        Ensemble([_model(), mlp(784, [8], 10, rng=1)], weights=weights)
    path = tmp_path / "ens.safetensors"
    ensemble = Ensemble([_model(), mlp(784, [8], 10, rng=1)])
    arch = ensemble.architecture()
    arch["weights"] = weights
    write(path, ensemble.state_arrays(), {**_meta(ensemble), "architecture": arch})
    assert_error(run_main(capsys, "evaluate", path, "--json"), 2, str(path),
                 "finite, non-negative weight")


def test_a_good_ensemble_file_still_loads(tmp_path, tiny_data):
    path = tmp_path / "ens.safetensors"
    save_ensemble(path, Ensemble([_model(), mlp(784, [8], 10, rng=1)], weights=[1, 3]))
    model, _ = load_model(path)
    assert model.weights == [0.25, 0.75]


# Every command that reads a model uses the same reader.

def test_predict_serve_explore_and_ensemble_use_the_same_checks(tmp_path, tiny_data, capsys):
    model = _model()
    arrays = {k: v.copy() for k, v in model.state_arrays().items()}
    arrays["0.W"].flat[0] = np.nan
    bad = write(tmp_path / "nan.safetensors", arrays, _meta(model))
    assert_error(run_main(capsys, "predict", bad, "--index", "0"), 2, "tensor 0.W")
    assert_error(run_main(capsys, "ensemble", bad, bad, "--out", tmp_path / "ens"), 2,
                 "tensor 0.W")
    assert not (tmp_path / "ens").exists()
    from barenet.app.explore import build_app
    with pytest.raises(ModelFileError, match="tensor 0.W"):
        build_app(str(bad))
    done = cli("serve", bad, "--port", "0", timeout=60)
    assert_error(done, 2, "tensor 0.W")
