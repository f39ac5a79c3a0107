"""Ensembles: several trained Sequential models whose class probabilities are averaged.

An ensemble is saved as one model file: each member's arrays under the prefix 'm<i>.', and
the architecture {"type": "Ensemble", "members": [member architecture, ...], "weights": [...],
"views": [...]}. That layout is written and read here, beside Ensemble; serialize.load_model
calls load_ensemble for such files.

Test-time augmentation: each member can also see every image in a few fixed `views` (the
image itself, its left-right mirror, one-pixel shifts), and the ensemble averages over
members and views alike. A single model with views is an ensemble of one.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np

from .inputspace import PREFIX as INPUT_SPACE
from .model import Sequential, architecture_shapes
from .modelfile import model_arrays, model_metadata, save_arrays

ENSEMBLE_TYPE = "Ensemble"
IDENTITY = "identity"
_SHIFTS = ("shift:1,0", "shift:-1,0", "shift:0,1", "shift:0,-1")
# Named sets of views for `barenet ensemble --tta`: mirrors suit garments (a mirrored shirt is
# a shirt), not digits; one-pixel shifts suit both.
TTA_PRESETS = {
    "none": [IDENTITY],
    "flip": [IDENTITY, "flip"],
    "shift": [IDENTITY, *_SHIFTS],
    "flip-shift": [IDENTITY, "flip", *_SHIFTS, *(f"flip+{s}" for s in _SHIFTS)],
}
_SHIFT = re.compile(r"shift:(-?\d+),(-?\d+)$")


def check_view(view: str) -> str:
    """`view` itself if it names a view, else ValueError.

    A view is 'identity', 'flip', 'shift:DY,DX' or steps joined by '+' ('flip+shift:1,0':
    mirror, then shift).
    """
    steps = view.split("+") if isinstance(view, str) else [None]
    for step in steps:
        if step == IDENTITY and len(steps) == 1 or step == "flip":
            continue
        match = _SHIFT.match(step) if isinstance(step, str) else None
        if not (match and max(abs(int(match[1])), abs(int(match[2]))) <= 4):
            raise ValueError(f"unknown view {view!r}: use 'identity', 'flip', 'shift:DY,DX' "
                             f"(shifts of at most 4 pixels) or steps joined by '+'")
    return view


def apply_view(x: np.ndarray, view: str) -> np.ndarray:
    """The images `x` seen through `view`: same shape and dtype; shifted-in pixels are 0.

    x: (N, H, W) or (N, H*W) square images, or (N, 1, H, W).
    """
    check_view(view)
    if view == IDENTITY:
        return x
    if "+" in view:
        for step in view.split("+"):
            x = apply_view(x, step)
        return x
    shape = x.shape
    if x.ndim == 2:
        side = math.isqrt(shape[1])
        if side * side != shape[1]:
            raise ValueError(f"views need square images, got rows of {shape[1]} values")
        images = x.reshape(len(x), side, side)
    elif x.ndim in (3, 4):
        images = x
    else:
        raise ValueError(f"views need (N, H, W) images, got shape {shape}")
    if view == "flip":
        return np.ascontiguousarray(images[..., ::-1]).reshape(shape)
    dy, dx = (int(v) for v in _SHIFT.match(view).groups())
    out = np.zeros_like(images)
    h, w = images.shape[-2:]
    # out[r, c] = images[r - dy, c - dx] where that lies inside the image.
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        images[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out.reshape(shape)


class Ensemble:
    """Mean of the members' probabilities over the views; optional non-negative member weights.

    views: how each member sees every image (see apply_view); default the image itself.
    """

    input_space = None      # as Sequential's: the training images' subspace, if known

    def __init__(self, members: list[Sequential], weights: list[float] | None = None,
                 views: list[str] | None = None):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = list(members)
        self.views = [check_view(v) for v in (views or [IDENTITY])]
        if len(set(self.views)) != len(self.views):
            raise ValueError(f"views repeat: {self.views}")
        if weights is None:
            weights = [1.0] * len(members)
        w = _weights(weights, len(members))
        self.weights = (w / w.sum()).tolist()
        self.training = False

    def __len__(self) -> int:
        return len(self.members)

    def eval(self) -> Ensemble:
        for m in self.members:
            m.eval()
        self.training = False
        return self

    def train(self) -> Ensemble:
        # Members train on their own; this only mirrors Sequential's interface.
        for m in self.members:
            m.train()
        self.training = True
        return self

    def predict_proba(self, x: np.ndarray, batch_size: int = 10_000) -> np.ndarray:
        """Weighted mean of the members' probabilities over the views, (N, K) float32."""
        total = None
        for view in self.views:
            seen = apply_view(x, view)
            for weight, member in zip(self.weights, self.members):
                probs = member.predict_proba(seen, batch_size)
                if total is None:
                    total = np.zeros(probs.shape, dtype=np.float64)
                total += weight * probs
        return (total / len(self.views)).astype(np.float32)

    def predict(self, x: np.ndarray, batch_size: int = 10_000) -> np.ndarray:
        return self.predict_proba(x, batch_size).argmax(axis=1)

    def logits(self, x: np.ndarray, batch_size: int = 10_000) -> np.ndarray:
        """Log of the mean probabilities: logits whose softmax is the ensemble's prediction,
        so training.evaluate() reports the ensemble's accuracy and cross-entropy."""
        probs = self.predict_proba(x, batch_size)
        return np.log(np.maximum(probs, np.float32(1e-30)))

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x)

    __call__ = forward

    def parameters(self):
        return [p for m in self.members for p in m.parameters()]

    def architecture(self) -> dict:
        return {"type": ENSEMBLE_TYPE, "members": [m.architecture() for m in self.members],
                "weights": self.weights, "views": self.views}

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {f"m{i}.{name}": a for i, m in enumerate(self.members)
                for name, a in m.state_arrays().items()}

    def __repr__(self) -> str:
        views = "" if self.views == [IDENTITY] else f", views {self.views}"
        return f"Ensemble({len(self.members)} members{views})"


def _weights(weights, n: int) -> np.ndarray:
    """One finite, non-negative weight per member, not all zero (NaN would pass `w < 0`)."""
    numbers = isinstance(weights, (list, tuple, np.ndarray)) and all(
        isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in weights)
    w = np.asarray(weights, dtype=np.float64) if numbers else np.zeros(0)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"need one finite, non-negative weight per member (not all zero), "
                         f"got {str(weights)[:80]}")
    return w


def ensemble_shapes(architecture) -> dict[str, tuple[int, ...]]:
    """'m<i>.<layer>.<name>' -> shape of every array of an ensemble described by
    `architecture`, checked (members, weights, views) without building anything."""
    if not is_ensemble_architecture(architecture) or not isinstance(
            architecture.get("members"), list) or not architecture["members"]:
        raise ValueError("architecture is not an ensemble description")
    members = architecture["members"]
    weights = architecture.get("weights")
    if weights is not None:
        _weights(weights, len(members))
    views = architecture.get("views")
    if views is not None:
        if not (isinstance(views, list) and views):
            raise ValueError(f"views must be a non-empty list, got {str(views)[:80]}")
        for view in views:
            check_view(view)
    shapes = {}
    for i, spec in enumerate(members):
        try:
            member = architecture_shapes(spec)
        except ValueError as exc:
            raise ValueError(f"member {i}: {exc}") from None
        shapes.update({f"m{i}.{name}": shape for name, shape in member.items()})
    return shapes


def is_ensemble_architecture(architecture) -> bool:
    return isinstance(architecture, dict) and architecture.get("type") == ENSEMBLE_TYPE


def save_ensemble(path: str | os.PathLike, ensemble: Ensemble, **extra) -> None:
    """One safetensors model file for the whole ensemble (same format as save_model)."""
    save_arrays(path, model_arrays(ensemble), model_metadata(ensemble, **extra))


def load_ensemble(arrays: dict[str, np.ndarray], meta: dict) -> Ensemble:
    """Rebuild an Ensemble (in eval mode) from load_arrays' output; ValueError on mismatch."""
    arch = meta.get("architecture")
    ensemble_shapes(arch)
    members = []
    for i, spec in enumerate(arch["members"]):
        prefix = f"m{i}."
        member = Sequential.from_architecture(spec)
        member.load_state_arrays({k[len(prefix):]: v for k, v in arrays.items()
                                  if k.startswith(prefix)})
        members.append(member)
    known = {f"m{i}." for i in range(len(members))} | {INPUT_SPACE}     # load_model reads it
    stray = sorted(k for k in arrays if k.split(".", 1)[0] + "." not in known)
    if stray:
        raise ValueError(f"arrays that belong to no member: {stray[:3]}")
    return Ensemble(members, arch.get("weights"), arch.get("views")).eval()
