"""Model files: safetensors for the arrays, its string metadata for a JSON description.

Never pickle: loading parses a length-prefixed JSON header and raw little-endian arrays, so
a file can hold data but no code. A checkpoint is the same format with optimizer state added.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from .model import Sequential

FORMAT = "barenet-model"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 100 * 1024 * 1024       # safetensors' own limit; refuse before reading more


class ModelFileError(ValueError):
    """A file that is not a readable barenet model; str() is one line for the user."""


def _version() -> str:
    from . import __version__
    return __version__


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)                  # mkstemp makes 0600; use the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Atomically write arrays + JSON metadata as one safetensors file."""
    from safetensors.numpy import save

    tensors = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    blob = save(tensors, metadata={"barenet": json.dumps(meta)})
    atomic_write_bytes(Path(path), blob)


def load_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read (arrays, metadata) from a file written by save_arrays, or raise ModelFileError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a directory, not a model file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror})") from None
    hint = "not a barenet model file (expected safetensors written by `barenet train`)"
    if len(raw) < 8:
        raise ModelFileError(f"{path}: {hint}: file is only {len(raw)} bytes")
    (header_len,) = struct.unpack("<Q", raw[:8])
    if header_len > min(MAX_HEADER_BYTES, len(raw) - 8) or raw[8:9] != b"{":
        kind = "a pickle" if raw[:1] == b"\x80" else "unknown data"
        raise ModelFileError(f"{path}: {hint}: it looks like {kind}, and it was not executed")
    try:
        header = json.loads(raw[8:8 + header_len])
        meta = json.loads(header.get("__metadata__", {}).get("barenet", "null"))
    except (ValueError, AttributeError):
        raise ModelFileError(f"{path}: {hint}: its header is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: {hint}: safetensors without barenet metadata")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(f"{path}: model format version {version} is newer than this barenet "
                             f"reads ({FORMAT_VERSION}); upgrade barenet")
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        arrays = load(raw)
    except (SafetensorError, ValueError) as exc:
        raise ModelFileError(f"{path}: damaged or truncated model file ({exc})") from None
    return arrays, meta


def model_metadata(model: Sequential, **extra) -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "barenet_version": _version(),
            "architecture": model.architecture(),
            "preprocessing": {"input": "uint8 grayscale 28x28, white ink on black",
                              "scale": "x / 255"},
            **extra}


def save_model(path: str | os.PathLike, model: Sequential, **extra) -> None:
    """Save weights and buffers plus metadata (architecture, training config, metrics...)."""
    save_arrays(path, model.state_arrays(), model_metadata(model, **extra))


def load_model(path: str | os.PathLike) -> tuple[Sequential, dict]:
    """(model in eval mode, metadata). Raises ModelFileError with a one-line reason.

    The model is a Sequential, or an Ensemble (same predict/predict_proba) for files written
    by `barenet ensemble`.
    """
    arrays, meta = load_arrays(path)
    arrays = {k: v for k, v in arrays.items() if not k.startswith("optimizer.")}
    try:
        if isinstance(meta.get("architecture"), dict):       # an averaged ensemble of models
            from .ensemble import is_ensemble_architecture, load_ensemble
            if not is_ensemble_architecture(meta["architecture"]):
                raise ValueError("unknown architecture kind")
            return load_ensemble(arrays, meta), meta
        model = Sequential.from_architecture(meta["architecture"])
        model.load_state_arrays(arrays)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: model file does not match its architecture: {exc}") from None
    return model.eval(), meta
