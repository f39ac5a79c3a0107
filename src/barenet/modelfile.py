"""Writing model files: safetensors for the arrays, its string metadata for a JSON description.

The format, the checksum that seals it and the atomic write are here; reading a file back,
with every check, is serialize.py. Writing needs no knowledge of the model: `model_metadata`
asks it for its architecture(), so a Sequential and an Ensemble are written alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

FORMAT = "barenet-model"
# 2: with CHECKSUM_KEY; 3: may hold inputspace arrays ("input_space.*"), which barenet before
# it refused as unexpected (it now says "upgrade barenet"). 1 and 2 still load.
FORMAT_VERSION = 3
CHECKSUM_KEY = "barenet_sha256"             # in the safetensors __metadata__, beside "barenet"


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


def to_bytes(arrays: dict[str, np.ndarray], meta: dict) -> bytes:
    """A safetensors file holding `arrays`, JSON `meta` and the checksum of both."""
    from safetensors.numpy import save

    tensors = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    metadata = {"barenet": json.dumps(meta)}
    # The tensor index does not depend on the metadata: hash a draft, then write it again
    # with the checksum added.
    draft = save(tensors, metadata=metadata)
    (n,) = struct.unpack("<Q", draft[:8])
    metadata[CHECKSUM_KEY] = digest(json.loads(draft[8:8 + n]), memoryview(draft)[8 + n:])
    return save(tensors, metadata=metadata)


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Atomically write arrays + JSON metadata (+ checksum) as one safetensors file."""
    atomic_write_bytes(Path(path), to_bytes(arrays, meta))


def digest(header: dict, data) -> str:
    """SHA-256 of the header without the checksum, in one canonical JSON form, then the data."""
    header = dict(header)
    header["__metadata__"] = {k: v for k, v in (header.get("__metadata__") or {}).items()
                              if k != CHECKSUM_KEY}
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":"))
    h = hashlib.sha256(b"barenet-model\0")
    h.update(canonical.encode("utf-8", "surrogatepass"))
    h.update(data)
    return h.hexdigest()


def model_arrays(model) -> dict[str, np.ndarray]:
    """The arrays of a file holding `model`: its weights and buffers, and the training
    images' subspace (inputspace.py) when the model has one."""
    arrays = model.state_arrays()
    if model.input_space is not None:
        arrays.update(model.input_space.to_arrays())
    return arrays


def model_metadata(model, **extra) -> dict:
    """The JSON metadata of a file holding `model` (a Sequential or an Ensemble), plus `extra`
    (training config, metrics, history...)."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "barenet_version": _version(),
            "architecture": model.architecture(),
            "preprocessing": {"input": "uint8 grayscale 28x28, white ink on black",
                              "scale": "x / 255"},
            **extra}


def _version() -> str:
    from . import __version__
    return __version__
