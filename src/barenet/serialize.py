"""Model files: save_model, load_model, and reading a file back with every check.

The format (safetensors arrays, a JSON description in its metadata, a checksum) and writing
it are in modelfile.py; its names are importable from here too. Never pickle: loading parses
a length-prefixed JSON header and raw little-endian arrays, so a file can hold data but no
code. A checkpoint is the same format with optimizer state added.

Reading checks before it allocates (like Pillow's decompression-bomb guard): only regular
files of at most MAX_FILE_BYTES are read; every tensor's dtype, shape and offsets must agree
with the file's size and with the shapes its architecture implies. Since format version 2 a
file carries a SHA-256 of its header (minus that field) and its data, like git's object ids:
one flipped bit anywhere is refused as damaged. Version-1 files (written before) have none;
they load with every other check, without a warning, since every run made until then is one.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from pathlib import Path

import numpy as np

from .ensemble import Ensemble, ensemble_shapes, load_ensemble
from .inputspace import PREFIX as INPUT_SPACE_PREFIX
from .inputspace import InputSpace
from .model import Sequential, architecture_shapes
from .modelfile import (  # noqa: F401  (the format's names, as callers import them from here)
    CHECKSUM_KEY,
    FORMAT,
    FORMAT_VERSION,
    atomic_write_bytes,
    digest,
    model_arrays,
    model_metadata,
    save_arrays,
    to_bytes,
)

MAX_HEADER_BYTES = 100 * 1024 * 1024        # safetensors' own limit
MAX_FILE_BYTES = 1 << 30                    # barenet's models are a few MB
DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8")}   # all that barenet writes
FLOAT32_MAX = float(np.finfo(np.float32).max)
# Metadata fields other code reads, and the JSON type each must have.
_FIELD_TYPES = {"architecture": (list, dict), "config": dict, "history": list,
                "metrics": dict, "checkpoint": dict, "preprocessing": dict,
                "barenet_version": str, "members": list, "sklearn": dict, "reject": dict}
_CONFIG_SECTIONS = ("data", "model", "optimizer", "schedule", "training", "augment", "loss")


# Arrays in a model file beside the model's own: a checkpoint's optimizer state, and the
# training images' PCA subspace that tells a digit from anything else (inputspace.py).
NOT_MODEL_ARRAYS = ("optimizer.", INPUT_SPACE_PREFIX)


class ModelFileError(ValueError):
    """A file that is not a readable barenet model; str() is one line for the user."""


def _read(path: Path) -> bytearray:
    """The whole file, refused before reading when it is not a regular file or too large."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then judges the file
        # actually opened (a name swapped after a check cannot slip through).
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    info = os.fstat(fd)
    problem = None
    if stat.S_ISDIR(info.st_mode):
        problem = "is a directory, not a model file"
    elif not stat.S_ISREG(info.st_mode):            # /dev/zero, a FIFO: no end, or a hang
        problem = "not a regular file (a device, pipe or socket); give a model file"
    elif info.st_size > MAX_FILE_BYTES:
        problem = (f"{info.st_size:,} bytes, more than a barenet model file can be "
                   f"({MAX_FILE_BYTES:,}); not a model file")
    if problem:
        os.close(fd)
        raise ModelFileError(f"{path}: {problem}")
    with os.fdopen(fd, "rb", buffering=0) as f:
        raw = bytearray(info.st_size)               # writable, so arrays can be views of it
        view, got = memoryview(raw), 0
        try:
            while got < len(raw):                   # a read may return less than asked
                n = f.readinto(view[got:])
                if not n:
                    break
                got += n
        except OSError as exc:
            raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
        finally:
            view.release()
    if got != len(raw):
        raise ModelFileError(f"{path}: the file changed while it was read; try again")
    return raw


def load_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read (arrays, metadata) from a file written by save_arrays, or raise ModelFileError.

    Nothing is allocated beyond the file's own bytes until the header has been checked
    against the file size and the architecture; NaN/inf values and dtypes barenet does not
    write are refused naming the tensor.
    """
    path = Path(path)
    raw = _read(path)
    header, start = _header(raw, path)
    expected = header["__metadata__"].get(CHECKSUM_KEY)
    if expected is not None and digest(header, memoryview(raw)[start:]) != expected:
        _refuse_newer(header, path)             # a newer format may hash otherwise
        short = _claimed_end(header) > len(raw) - start
        what = ("damaged or truncated model file (checksum mismatch; shorter than its header "
                "says)" if short else "damaged (checksum mismatch): the file changed after "
                "barenet wrote it")
        raise ModelFileError(f"{path}: {what}; use another copy, or train again")
    meta = _metadata(header, path)
    if expected is None and meta["format_version"] >= 2:
        raise ModelFileError(f"{path}: damaged (its checksum is missing)")
    index = _index(header, len(raw) - start, path)
    _check_against_architecture(index, meta, path)
    arrays = {}
    for name, (dtype, shape, begin, _end) in index.items():
        array = np.frombuffer(raw, dtype, math.prod(shape), start + begin).reshape(shape)
        if not np.isfinite(array).all():
            raise ModelFileError(f"{path}: tensor {name} holds NaN or infinite values; the "
                                 f"model is damaged or its training diverged")
        if dtype.itemsize == 8 and array.size and np.abs(array).max() > FLOAT32_MAX:
            raise ModelFileError(f"{path}: tensor {name} holds values beyond float32's "
                                 f"range (models compute in float32); the model is damaged")
        arrays[name] = array
    return arrays, meta


def _header(raw: bytearray, path: Path) -> tuple[dict, int]:
    """The parsed JSON header and where the data starts."""
    hint = "not a barenet model file (expected safetensors written by `barenet train`)"
    if len(raw) < 8:
        raise ModelFileError(f"{path}: {hint}: file is only {len(raw)} bytes")
    (header_len,) = struct.unpack("<Q", raw[:8])
    if raw[8:9] != b"{":
        kind = "a pickle" if raw[:1] == b"\x80" else "unknown data"
        raise ModelFileError(f"{path}: {hint}: it looks like {kind}, and it was not executed")
    if header_len > min(MAX_HEADER_BYTES, len(raw) - 8):
        raise ModelFileError(f"{path}: {hint}, or a damaged or truncated one: its header "
                             f"claims {header_len:,} bytes, the file has {len(raw) - 8:,} after "
                             f"it")
    try:
        header = json.loads(bytes(raw[8:8 + header_len]))
    except (ValueError, RecursionError):             # UnicodeDecodeError is a ValueError
        raise ModelFileError(f"{path}: damaged or not a model file: its header is not valid "
                             f"JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise _without_metadata(path, raw[8:8 + header_len].decode("utf-8", "replace"))
    return header, 8 + header_len


def _without_metadata(path: Path, header_text: str) -> ModelFileError:
    """Our own marks in a header whose metadata cannot be read: a damaged barenet file."""
    if FORMAT in header_text or CHECKSUM_KEY in header_text:
        return ModelFileError(f"{path}: damaged barenet model file: its metadata cannot be "
                              f"read; use another copy, or train again")
    return ModelFileError(f"{path}: not a barenet model file (expected safetensors written by "
                          f"`barenet train`): safetensors without barenet metadata")


def _refuse_newer(header: dict, path: Path) -> None:
    try:
        version = json.loads(header["__metadata__"].get("barenet")).get("format_version")
    except (TypeError, ValueError, AttributeError, RecursionError):
        return
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise ModelFileError(f"{path}: model format version {version} is newer than this "
                             f"barenet reads ({FORMAT_VERSION}); upgrade barenet")


def _metadata(header: dict, path: Path) -> dict:
    """The barenet metadata, its version and the types of the fields other code reads."""
    text = header["__metadata__"].get("barenet")
    try:
        meta = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _without_metadata(path, json.dumps(header["__metadata__"]))
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(f"{path}: model format version {str(version)[:20]!r} is not a "
                             f"positive whole number; the file is damaged or not barenet's")
    _refuse_newer(header, path)
    for field, kind in _FIELD_TYPES.items():
        if field in meta and meta[field] is not None and not isinstance(meta[field], kind):
            raise ModelFileError(f"{path}: damaged metadata: {field} is a "
                                 f"{_json_type(meta[field])}, not a {_json_type(kind)}")
    config = meta.get("config") or {}
    for section in _CONFIG_SECTIONS:          # present means a table: readers do .get()
        value = config.get(section)
        if section in config and not isinstance(value, dict):
            raise ModelFileError(f"{path}: damaged metadata: config.{section} is a "
                                 f"{_json_type(value)}, not a table")
    data = config.get("data") or {}
    if "dataset" in data and not isinstance(data["dataset"], str):
        raise ModelFileError(f"{path}: damaged metadata: config.data.dataset is a "
                             f"{_json_type(data['dataset'])}, not a name")
    if not all(isinstance(row, dict) for row in meta.get("history") or []):
        raise ModelFileError(f"{path}: damaged metadata: history holds rows that are not "
                             f"tables")
    for key, value in (meta.get("metrics") or {}).items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key in ("test_accuracy", "test_loss") and not (value is None or number):
            raise ModelFileError(f"{path}: damaged metadata: metrics.{key} is a "
                                 f"{_json_type(value)}, not a number")
    return meta


def _json_type(value) -> str:
    kinds = value if isinstance(value, tuple) else (value if isinstance(value, type)
                                                    else type(value),)
    names = {dict: "table", list: "list", str: "string", bool: "boolean", int: "number",
             float: "number", type(None): "null"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _index(header: dict, data_len: int, path: Path) -> dict[str, tuple]:
    """name -> (dtype, shape, begin, end) for every tensor, each checked against the data
    region: a known dtype, whole sizes, byte counts that match, no gap, overlap or excess."""
    index = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not (isinstance(entry, dict) and isinstance(entry.get("dtype"), str)
                and isinstance(entry.get("shape"), list)
                and isinstance(entry.get("data_offsets"), list)
                and len(entry["data_offsets"]) == 2
                and all(_whole(v) for v in [*entry["shape"], *entry["data_offsets"]])):
            raise ModelFileError(f"{path}: damaged model file: tensor {name[:60]!r} has no "
                                 f"valid dtype, shape and offsets")
        dtype = DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ModelFileError(f"{path}: tensor {name[:60]} is stored as "
                                 f"{entry['dtype'][:10]}; barenet writes only float32 (F32) "
                                 f"or float64 (F64) weights")
        shape, (begin, end) = tuple(entry["shape"]), entry["data_offsets"]
        if math.prod(shape) * dtype.itemsize != end - begin or end > data_len:
            raise ModelFileError(f"{path}: damaged or truncated model file: tensor "
                                 f"{name[:60]} of shape {shape} does not fit its "
                                 f"{end - begin:,} bytes at {begin:,} (the data is "
                                 f"{data_len:,} bytes)")
        index[name] = (dtype, shape, begin, end)
    covered = 0                                 # each tensor starts where the last ended
    for _, _, begin, end in sorted(index.values(), key=lambda t: (t[2], t[3])):
        covered = end if begin == covered else -1
    if covered != data_len:
        raise ModelFileError(f"{path}: damaged or truncated model file: its tensors do not "
                             f"cover its {data_len:,} data bytes exactly")
    return index


def _claimed_end(header: dict) -> int:
    """Where the last tensor's data ends, by the header's word (0 if it says nothing clear)."""
    ends = [e["data_offsets"][1] for e in header.values() if isinstance(e, dict)
            and isinstance(e.get("data_offsets"), list) and len(e["data_offsets"]) == 2]
    return max((e for e in ends if _whole(e)), default=0)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 62


def _check_against_architecture(index: dict, meta: dict, path: Path) -> None:
    """The model arrays a file holds must be those its architecture describes, shape for
    shape: checked on the header alone, before any layer is built."""
    if "architecture" not in meta:
        return
    arch = meta["architecture"]
    try:
        shapes = ensemble_shapes if isinstance(arch, dict) else architecture_shapes
        expected = shapes(arch)
    except ValueError as exc:
        raise ModelFileError(f"{path}: damaged or unusable architecture: {exc}") from None
    held = {k: v[1] for k, v in index.items() if not k.startswith(NOT_MODEL_ARRAYS)}
    missing = sorted(set(expected) - set(held))
    extra = sorted(set(held) - set(expected))
    if missing or extra:
        raise ModelFileError(f"{path}: model file does not match its architecture: model "
                             f"arrays do not match the architecture (missing "
                             f"{missing[:3]}, unexpected {[e[:60] for e in extra[:3]]})")
    for name, shape in expected.items():
        if held[name] != shape:
            raise ModelFileError(f"{path}: model file does not match its architecture: array "
                                 f"{name} has shape {held[name]}, the architecture needs "
                                 f"{shape}")


def save_model(path: str | os.PathLike, model: Sequential | Ensemble, **extra) -> None:
    """Save weights and buffers plus metadata (architecture, training config, metrics...).

    An Ensemble is one file too: its members' arrays under 'm<i>.' (see ensemble.py)."""
    save_arrays(path, model_arrays(model), model_metadata(model, **extra))


def load_model(path: str | os.PathLike) -> tuple[Sequential | Ensemble, dict]:
    """(model in eval mode, metadata). Raises ModelFileError with a one-line reason.

    The model is a Sequential, or an Ensemble (same predict/predict_proba) for files written
    by `barenet ensemble`. The same reader serves evaluate, predict, serve, explore and export.
    """
    arrays, meta = load_arrays(path)
    if "architecture" not in meta:
        raise ModelFileError(f"{path}: a barenet file without an architecture (not a model)")
    try:
        space = InputSpace.from_arrays(arrays)
    except ValueError as exc:
        raise ModelFileError(f"{path}: damaged: {exc}; use another copy, or train again") from None
    try:
        arrays = {k: v for k, v in arrays.items() if not k.startswith(NOT_MODEL_ARRAYS)}
        if isinstance(meta["architecture"], dict):       # an averaged ensemble of models
            model = load_ensemble(arrays, meta)
        else:
            model = Sequential.from_architecture(meta["architecture"])
            model.load_state_arrays(arrays)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: model file does not match its architecture: {exc}") from None
    model.input_space = space
    return model.eval(), meta
