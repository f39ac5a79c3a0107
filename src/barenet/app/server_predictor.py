"""The model behind `barenet serve`: one image in, a prediction (and saliency map) out; the test
set for the gallery; the model card. No HTTP here beyond the status an image error maps to.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from fastapi import HTTPException

from ..saliency import saliency_map
from .common import MODEL_REJECT, dataset_of, model_reject
from .server_schema import SIDE


class Predictor:
    """The model and its test set; a lock because layers cache activations for backward."""

    def __init__(self, model, meta: dict, test: tuple[np.ndarray, np.ndarray] | None = None):
        self.model, self.meta = model, meta
        self._lock = threading.Lock()
        self._decode = threading.BoundedSemaphore(2)  # large decodes at a time: bounds memory
        # Saliency backpropagates through one layer stack; ensembles have several.
        self.has_saliency = hasattr(model, "layers")
        self.x_test = self.y_test = self.predicted = None
        if test is not None:
            self.x_test, self.y_test = test[0], np.asarray(test[1]).astype(np.int64)
            self.predicted = self.model.predict(self.x_test)

    def preprocess(self, data: bytes) -> np.ndarray:
        """Image bytes -> uint8 (28, 28) as MNIST digits were made, or a 400/413/422."""
        from ..data.preprocess import ImageError, load_digit, preprocess_image

        with self._decode:
            try:
                return preprocess_image(load_digit(data))
            except ImageError as exc:
                raise HTTPException(_image_error_status(str(exc)), str(exc)) from None

    def predict(self, image: np.ndarray, **extra) -> dict:
        """uint8 (28, 28) -> the Prediction fields."""
        with self._lock:
            probs = self.model.predict_proba(image[None])[0]
            label = int(probs.argmax())
            saliency = self._saliency_map(image, label)
        space = self.model.input_space
        typical = None if space is None else bool(space.typical(image[None])[0])
        return {"label": label, "probabilities": [round(float(p), 6) for p in probs],
                "input": image.tolist(), "saliency": saliency, "typical": typical, **extra}

    def attack(self, image: np.ndarray) -> dict:
        """uint8 (28, 28) -> the Attack fields: the smallest FGSM eps that flips the answer."""
        from ..adversarial import NoGradient, check_gradient, smallest_flip
        try:
            check_gradient(self.model)
        except NoGradient as exc:
            raise HTTPException(422, str(exc)) from None
        with self._lock:
            probs = self.model.predict_proba(image[None])[0]
            found = smallest_flip(self.model, image)
            after = None if found is None else self.model.predict_proba(found[1][None])[0]
        result = {"eps": None, "label": int(probs.argmax()),
                  "probability": round(float(probs.max()), 6)}
        if found is not None:
            result.update(eps=found[0], adversarial_label=found[2],
                          adversarial_probability=round(float(after[found[2]]), 6),
                          adversarial=np.round(found[1] * 255.0, 2).tolist())
        return result

    def _saliency_map(self, image: np.ndarray, label: int) -> list | None:
        if not self.has_saliency:
            return None
        try:
            s = saliency_map(self.model, image, label).astype(np.float64)
            s = s.reshape(SIDE, SIDE)
            top = float(s.max())
            s = s / top if top > 0 and math.isfinite(top) else np.zeros_like(s)
            return np.round(s, 4).tolist()
        except Exception:  # a failing optional view must not cost the prediction
            return None


def _image_error_status(message: str) -> int:
    if "too large" in message:
        return 413
    if "no digit found" in message:
        return 422
    return 400


def model_card(p: Predictor, max_body: int) -> dict:
    """The ModelCard fields: architecture, size, training configuration, test metrics."""
    meta = p.meta
    config = meta.get("config") or {}
    metrics = meta.get("metrics") or {}
    spec = meta.get("architecture", [])
    ensemble = None
    if isinstance(spec, dict):  # barenet ensemble: {"type": "Ensemble", "members": [...]}
        ensemble = [_layers(member) for member in spec.get("members", [])]
        spec = []
    return {
        "architecture": _layers(spec),
        "ensemble": ensemble,
        "parameters": int(sum(q.data.size for q in p.model.parameters())),
        "dataset": metrics.get("dataset") or dataset_of(config),
        "test_accuracy": metrics.get("test_accuracy"),
        "test_loss": metrics.get("test_loss"),
        "epochs": len(meta.get("history") or []) or None,
        "config": config,
        "augmentation": augmentation_summary(config.get("augment")),
        "barenet_version": meta.get("barenet_version"),
        "saliency": p.has_saliency,
        "gallery": p.x_test is not None,
        "test_images": 0 if p.x_test is None else int(len(p.x_test)),
        "test_set_accuracy": None if p.x_test is None
        else round(float(np.mean(p.predicted == p.y_test)), 6),
        "max_body_bytes": max_body,
        "reject_threshold": model_reject(MODEL_REJECT, meta),
        "input_space": p.model.input_space is not None,
        "attack": p.has_saliency,
    }


def _layers(spec) -> list[dict]:
    """Architecture entries {"type": ..., **config} -> [{"type": ..., "config": {...}}]."""
    return [{"type": e.get("type", "?"), "config": {k: v for k, v in e.items() if k != "type"}}
            for e in spec if isinstance(e, dict)]


def augmentation_summary(augment) -> str | None:
    """A config's [augment] section in words: what is on, "none" when no image is changed
    (one test decides: data.augment.changes_images), None without a section. Settings that
    shape an augmentation that is off (erase_area without erase) are not shown."""
    import dataclasses

    from ..config import AugmentConfig
    from ..data.augment import changes_images

    if not isinstance(augment, dict):
        return None
    known = {f.name for f in dataclasses.fields(AugmentConfig)}
    try:
        a = AugmentConfig(**{k: float(v) for k, v in augment.items() if k in known})
    except (TypeError, ValueError):
        return None
    if not changes_images(a):
        return "none"
    parts = [f"shift {a.shift:g} px" if a.shift else "",
             f"rotate {a.rotate:g}°" if a.rotate else "",
             f"scale ±{a.scale:g}" if a.scale else "",
             f"elastic alpha {a.elastic_alpha:g} sigma {a.elastic_sigma:g}"
             if a.elastic_alpha else "",
             f"flip p {a.flip:g}" if a.flip else "",
             f"erase p {a.erase:g} (up to {a.erase_area:g} of the image)" if a.erase else ""]
    return ", ".join(p for p in parts if p)
