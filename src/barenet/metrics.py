"""Classification metrics from labels and predictions (or probabilities). NumPy only.

Precision, recall and F1 follow scikit-learn's conventions (zero_division=0); calibration is
the expected calibration error over equal-width confidence bins. Plots live in app/plots.py.
"""

from __future__ import annotations

import math

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


def top_k_accuracy(labels: np.ndarray, probs: np.ndarray, k: int = 3) -> float:
    """Fraction of rows whose true class is among the k most probable; probs (N, K)."""
    if len(labels) == 0:
        return 0.0
    classes, _ = top_k(probs, k)
    return float(np.mean((classes == np.asarray(labels)[:, None]).any(axis=1)))


def _safe_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b as float64, 0 where b == 0 (scikit-learn's zero_division=0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=b != 0)


def normalize_confusion(cm: np.ndarray) -> np.ndarray:
    """Row-normalized (K, K) float64: each true class's predictions as fractions (0 rows stay 0)."""
    return _safe_divide(cm, cm.sum(axis=1, keepdims=True))


def precision_recall_f1(cm: np.ndarray) -> tuple[np.ndarray, ...]:
    """(precision, recall, f1, support), each (K,), from a confusion matrix.

    precision = TP / predicted count, recall = TP / support; 0 where the denominator is 0
    (a class never predicted has precision 0, a class never present has recall 0).
    """
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    precision = _safe_divide(tp, cm.sum(axis=0))
    recall = _safe_divide(tp, support)
    f1 = _safe_divide(2.0 * precision * recall, precision + recall)
    return precision, recall, f1, support


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean -log p(true class), p clipped to [eps, 1 - eps] with float64's eps (2.2e-16).

    scikit-learn clips at the input dtype's eps; for float32 that is 1.2e-7, which would cap
    each confident mistake at 16 nats and understate the loss of a sharp network.
    """
    probs = np.asarray(probs)
    if len(probs) == 0:
        return 0.0
    eps = float(np.finfo(np.float64).eps)
    p = probs[np.arange(len(probs)), np.asarray(labels, np.int64)].astype(np.float64)
    return float(-np.mean(np.log(np.clip(p, eps, 1.0 - eps))))


def calibration(labels: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> dict:
    """Expected calibration error and the reliability table of top-1 confidences.

    Bins split [0, 1] into n_bins equal widths, right edge inclusive (as scikit-learn's
    calibration_curve). ECE = sum over bins of (count / N) * |accuracy - mean confidence|.
    Returns {"ece", "n_bins", "bins": [{"lower", "upper", "count", "confidence", "accuracy"}]};
    empty bins have count 0 and confidence/accuracy None.
    """
    probs = np.asarray(probs)
    confidence = probs.max(axis=1).astype(np.float64)                      # (N,)
    correct = (probs.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.searchsorted(edges[1:-1], confidence, side="left")           # (N,) in [0, n_bins)
    count = np.bincount(which, minlength=n_bins)
    mean_conf = _safe_divide(np.bincount(which, confidence, n_bins), count)
    mean_acc = _safe_divide(np.bincount(which, correct, n_bins), count)
    n = max(len(confidence), 1)
    ece = float(np.sum(count / n * np.abs(mean_acc - mean_conf)))
    bins = [{"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": int(count[b]),
             "confidence": float(mean_conf[b]) if count[b] else None,
             "accuracy": float(mean_acc[b]) if count[b] else None}
            for b in range(n_bins)]
    return {"ece": ece, "n_bins": n_bins, "bins": bins}


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    return calibration(labels, probs, n_bins)["ece"]


def most_confused(cm: np.ndarray, n: int = 10) -> list[tuple[int, int, int]]:
    """The n largest off-diagonal cells as (true, predicted, count), count > 0, largest first."""
    off = np.array(cm, dtype=np.int64)
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:n]                  # ties: row-major
    pairs = [(int(i), int(j), int(off[i, j])) for i, j in zip(*np.unravel_index(order, off.shape))]
    return [p for p in pairs if p[2] > 0]


# The reject option: answer only when the top probability reaches a threshold. 0.9 keeps 97.6 %
# (MLP) and 99.1 % (CNN) of the MNIST test digits and refuses about half of random scribbles
# (docs/understanding.md); any threshold can be given instead.
DEFAULT_REJECT = 0.9
REJECT_THRESHOLDS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999)


# A run with a validation split of at least REJECT_MIN_IMAGES stores its own default: the
# lowest threshold at which the answered validation images reach this accuracy. Fewer images
# cannot tell 99.5 % from 100 % (and choosing and judging on the same images flatters it).
REJECT_TARGET = 0.995
REJECT_MIN_IMAGES = 1000


def calibrated_reject(labels: np.ndarray, probs: np.ndarray, target: float = REJECT_TARGET,
                      min_images: int = REJECT_MIN_IMAGES) -> dict:
    """The lowest threshold t whose answered images (top probability >= t) reach `target`
    accuracy on these held-out images, with the share answered and the accuracy there;
    threshold None when no t does or there are fewer than `min_images` images.

    Thresholds are the images' own top probabilities (rounded down to 6 decimals, as the web
    API rounds probabilities), so the answered sets are the prefixes of the images sorted by
    confidence.
    """
    probs = np.asarray(probs)
    if len(probs) < max(1, min_images):
        return {"threshold": None, "target": target, "images": int(len(probs))}
    top = probs.max(axis=1)
    right = probs.argmax(axis=1) == np.asarray(labels)
    order = np.argsort(-top, kind="stable")
    running = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    # A prefix may only end where the next image is less confident (ties go together).
    ends = np.flatnonzero(np.append(top[order][1:] < top[order][:-1], True))
    good = ends[running[ends] >= target]
    if not len(good):
        return {"threshold": None, "target": target, "images": int(len(top))}
    threshold = math.floor(float(top[order][good[-1]]) * 1e6) / 1e6
    kept = top >= threshold
    return {"threshold": threshold, "target": target, "images": int(len(top)),
            "coverage": float(kept.mean()), "accuracy": float(right[kept].mean())}


def answered(top: np.ndarray, threshold: float, typical: np.ndarray | None = None) -> np.ndarray:
    """Which answers the reject option gives: top probability >= threshold and, when the
    model's input-space check is known, an input like the training digits. Threshold 0
    answers everything (no check): one rule for the CLI, the explorer and the web page."""
    sure = np.asarray(top) >= threshold
    if typical is not None and threshold > 0:
        sure &= np.asarray(typical)
    return sure


def coverage_curve(labels: np.ndarray, probs: np.ndarray, thresholds=REJECT_THRESHOLDS,
                   typical: np.ndarray | None = None) -> list[dict]:
    """Selective classification: for each threshold t, the share of images answered
    (top probability >= t, and typical where the input-space check is given: `answered`)
    and the accuracy on those (None when none is answered)."""
    probs = np.asarray(probs)
    right = probs.argmax(axis=1) == np.asarray(labels)
    top = probs.max(axis=1)
    rows = []
    for t in thresholds:
        mask = answered(top, t, typical)
        rows.append({"threshold": float(t), "coverage": float(mask.mean()) if len(mask) else 0.0,
                     "accuracy": float(right[mask].mean()) if mask.any() else None})
    return rows


def _round(a, digits: int = 6) -> list:
    return np.round(np.asarray(a, np.float64), digits).tolist()


def classification_report(labels: np.ndarray, probs: np.ndarray, *, n_classes: int | None = None,
                          n_bins: int = 15, k: int = 3, n_confused: int = 10) -> dict:
    """Every metric for (labels (N,), probs (N, K)) as a JSON-ready dict.

    Keys: n, accuracy, top_k_accuracy ({"k", "accuracy"}), log_loss, ece, per_class (list of
    {"class", "precision", "recall", "f1", "support"}), per_class_accuracy (= recall),
    macro_avg and weighted_avg ({"precision", "recall", "f1"}), confusion_matrix (counts),
    confusion_matrix_normalized (rows sum to 1), reliability (the calibration bins),
    most_confused (list of {"true", "predicted", "count"}), coverage (the reject option's
    trade-off: {"threshold", "coverage", "accuracy"} per threshold).
    """
    labels = np.asarray(labels, np.int64)
    probs = np.asarray(probs)
    n_classes = n_classes or probs.shape[1]
    predicted = probs.argmax(axis=1)
    cm = confusion_matrix(labels, predicted, n_classes)
    precision, recall, f1, support = precision_recall_f1(cm)
    weights = _safe_divide(support, support.sum())
    cal = calibration(labels, probs, n_bins)
    avg = {"macro_avg": (precision.mean(), recall.mean(), f1.mean()),
           "weighted_avg": (precision @ weights, recall @ weights, f1 @ weights)}
    return {
        "n": int(len(labels)),
        "accuracy": accuracy(labels, predicted),
        "top_k_accuracy": {"k": k, "accuracy": top_k_accuracy(labels, probs, k)},
        "log_loss": log_loss(labels, probs),
        "ece": cal["ece"],
        "per_class": [{"class": c, "precision": float(precision[c]), "recall": float(recall[c]),
                       "f1": float(f1[c]), "support": int(support[c])} for c in range(n_classes)],
        "per_class_accuracy": _round(recall),
        **{name: {"precision": float(p), "recall": float(r), "f1": float(f)}
           for name, (p, r, f) in avg.items()},
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": _round(normalize_confusion(cm)),
        "reliability": cal["bins"],
        "most_confused": [{"true": t, "predicted": p, "count": c}
                          for t, p, c in most_confused(cm, n_confused)],
        "coverage": coverage_curve(labels, probs),
    }


def format_report_table(report: dict, digits: int = 4) -> str:
    """scikit-learn's classification_report layout, then top-k, log loss, ECE, confused pairs."""
    names = [str(row["class"]) for row in report["per_class"]]
    width = max(len("weighted avg"), digits, *map(len, names))
    head = " " * width + " " + "".join(f" {h:>9}" for h in ("precision", "recall", "f1-score",
                                                             "support"))
    row_fmt = "{:>{w}s} " + " {:>9.{d}f}" * 3 + " {:>9}"
    lines = [head, ""]
    for name, row in zip(names, report["per_class"]):
        lines.append(row_fmt.format(name, row["precision"], row["recall"], row["f1"],
                                    row["support"], w=width, d=digits))
    total = report["n"]
    lines += ["", f"{'accuracy':>{width}s} " + f" {'':>9}" * 2
              + f" {report['accuracy']:>9.{digits}f} {total:>9}"]
    for key, name in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        a = report[key]
        lines.append(row_fmt.format(name, a["precision"], a["recall"], a["f1"], total,
                                    w=width, d=digits))
    top = report["top_k_accuracy"]
    lines += ["", f"top-{top['k']} accuracy {top['accuracy']:.{digits}f}   "
                  f"log loss {report['log_loss']:.{digits}f}   "
                  f"ECE {report['ece']:.{digits}f} ({len(report['reliability'])} bins)"]
    if report["most_confused"]:
        pairs = ", ".join(f"{p['true']}->{p['predicted']} ({p['count']})"
                          for p in report["most_confused"][:5])
        lines.append(f"most confused (true->predicted): {pairs}")
    return "\n".join(lines)
