"""Classification metrics from labels and predictions (or probabilities). NumPy only."""

from __future__ import annotations

import numpy as np


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    return float(np.mean(labels == predicted)) if len(labels) else 0.0


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int = 10) -> np.ndarray:
    """(K, K) int64 counts; row = true class, column = predicted class."""
    flat = np.asarray(labels, np.int64) * n_classes + np.asarray(predicted, np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall per true class: diagonal / row sums (0 where a class has no examples)."""
    support = cm.sum(axis=1)
    return np.divide(np.diag(cm), support, out=np.zeros(len(cm)), where=support > 0)


def top_k(probs: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(classes, probabilities), each (N, k), most probable first."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(probs, order, axis=1)
