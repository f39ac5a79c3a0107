"""Ensembles: several trained Sequential models whose class probabilities are averaged.

An ensemble is saved as one model file: each member's arrays under the prefix 'm<i>.', and
the architecture {"type": "Ensemble", "members": [member architecture, ...]}.
"""

from __future__ import annotations

import os

import numpy as np

from .model import Sequential
from .serialize import model_metadata, save_arrays

ENSEMBLE_TYPE = "Ensemble"


class Ensemble:
    """Mean of the members' probabilities; optional non-negative member weights."""

    def __init__(self, members: list[Sequential], weights: list[float] | None = None):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = list(members)
        if weights is None:
            weights = [1.0] * len(members)
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(members),) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"need one non-negative weight per member, got {weights!r}")
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
        """Weighted mean of the members' probabilities, (N, K) float32."""
        total = None
        for weight, member in zip(self.weights, self.members):
            probs = member.predict_proba(x, batch_size)
            if total is None:
                total = np.zeros(probs.shape, dtype=np.float64)
            total += weight * probs
        return total.astype(np.float32)

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
                "weights": self.weights}

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {f"m{i}.{name}": a for i, m in enumerate(self.members)
                for name, a in m.state_arrays().items()}

    def __repr__(self) -> str:
        return f"Ensemble({len(self.members)} members)"


def is_ensemble_architecture(architecture) -> bool:
    return isinstance(architecture, dict) and architecture.get("type") == ENSEMBLE_TYPE


def save_ensemble(path: str | os.PathLike, ensemble: Ensemble, **extra) -> None:
    """One safetensors model file for the whole ensemble (same format as save_model)."""
    save_arrays(path, ensemble.state_arrays(), model_metadata(ensemble, **extra))


def load_ensemble(arrays: dict[str, np.ndarray], meta: dict) -> Ensemble:
    """Rebuild an Ensemble (in eval mode) from load_arrays' output; ValueError on mismatch."""
    arch = meta.get("architecture")
    if not is_ensemble_architecture(arch) or not isinstance(arch.get("members"), list):
        raise ValueError("architecture is not an ensemble description")
    members = []
    for i, spec in enumerate(arch["members"]):
        prefix = f"m{i}."
        member = Sequential.from_architecture(spec)
        member.load_state_arrays({k[len(prefix):]: v for k, v in arrays.items()
                                  if k.startswith(prefix)})
        members.append(member)
    known = {f"m{i}." for i in range(len(members))}
    stray = sorted(k for k in arrays if k.split(".", 1)[0] + "." not in known)
    if stray:
        raise ValueError(f"arrays that belong to no member: {stray[:3]}")
    return Ensemble(members, arch.get("weights")).eval()
