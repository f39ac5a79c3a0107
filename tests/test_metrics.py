"""barenet.metrics against scikit-learn on random predictions, plus hand-computed edge cases."""

import json

import numpy as np
import pytest

from barenet import metrics

sk = pytest.importorskip("sklearn.metrics")
calibration_curve = pytest.importorskip("sklearn.calibration").calibration_curve


def random_predictions(n=500, k=10, seed=0, dtype=np.float64):
    """Labels and softmax probabilities that are right about half the time."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += 1.5
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return labels, probs.astype(dtype)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_sklearn_on_random_predictions(seed):
    labels, probs = random_predictions(seed=seed)
    predicted = probs.argmax(axis=1)
    report = metrics.classification_report(labels, probs)

    assert report["accuracy"] == pytest.approx(sk.accuracy_score(labels, predicted))
    cm = sk.confusion_matrix(labels, predicted, labels=range(10))
    np.testing.assert_array_equal(report["confusion_matrix"], cm)
    np.testing.assert_allclose(report["confusion_matrix_normalized"],
                               sk.confusion_matrix(labels, predicted, labels=range(10),
                                                   normalize="true"), atol=1e-6)
    p, r, f, s = sk.precision_recall_fscore_support(labels, predicted, labels=range(10),
                                                    zero_division=0)
    per_class = report["per_class"]
    np.testing.assert_allclose([c["precision"] for c in per_class], p, rtol=1e-12)
    np.testing.assert_allclose([c["recall"] for c in per_class], r, rtol=1e-12)
    np.testing.assert_allclose([c["f1"] for c in per_class], f, rtol=1e-12)
    np.testing.assert_array_equal([c["support"] for c in per_class], s)
    for key, average in (("macro_avg", "macro"), ("weighted_avg", "weighted")):
        p, r, f, _ = sk.precision_recall_fscore_support(labels, predicted, labels=range(10),
                                                        average=average, zero_division=0)
        assert (report[key]["precision"], report[key]["recall"], report[key]["f1"]) == \
            pytest.approx((p, r, f), rel=1e-12)
    assert report["log_loss"] == pytest.approx(sk.log_loss(labels, probs, labels=range(10)),
                                                rel=1e-9)
    for k in (1, 3, 5):
        assert metrics.top_k_accuracy(labels, probs, k) == pytest.approx(
            sk.top_k_accuracy_score(labels, probs, k=k, labels=range(10)))
    assert report["top_k_accuracy"] == {"k": 3, "accuracy": metrics.top_k_accuracy(labels,
                                                                                    probs, 3)}


def test_report_table_matches_sklearn_layout():
    labels, probs = random_predictions(seed=3)
    table = metrics.format_report_table(metrics.classification_report(labels, probs))
    expected = sk.classification_report(labels, probs.argmax(axis=1), digits=4,
                                        zero_division=0)
    assert table.startswith(expected.rstrip("\n"))
    assert "top-3 accuracy" in table and "log loss" in table and "ECE" in table


def test_class_never_predicted_has_precision_zero_and_absent_class_recall_zero():
    # Class 2 is never predicted; class 3 never occurs (and is never predicted either).
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 0, 1])
    probs = np.eye(4)[predicted]
    report = metrics.classification_report(labels, probs)
    p, r, f, s = sk.precision_recall_fscore_support(labels, predicted, labels=range(4),
                                                    zero_division=0)
    got = report["per_class"]
    assert [c["precision"] for c in got] == pytest.approx(p)   # [1/2, 2/4, 0, 0]
    assert [c["recall"] for c in got] == pytest.approx(r)      # [1/2, 1, 0, 0]
    assert [c["f1"] for c in got] == pytest.approx(f)
    assert [c["support"] for c in got] == [2, 2, 2, 0]
    assert got[2]["precision"] == 0.0 and got[3]["recall"] == 0.0
    macro = sk.precision_recall_fscore_support(labels, predicted, labels=range(4),
                                               average="macro", zero_division=0)
    assert report["macro_avg"]["f1"] == pytest.approx(macro[2])
    assert report["confusion_matrix_normalized"][3] == [0.0] * 4   # empty row stays 0


def test_log_loss_clips_certain_mistakes_like_sklearn():
    labels = np.array([0, 1])
    probs = np.array([[1.0, 0.0], [1.0, 0.0]])   # second row: p(true) = 0
    assert metrics.log_loss(labels, probs) == pytest.approx(sk.log_loss(labels, probs))
    assert np.isfinite(metrics.log_loss(labels, probs.astype(np.float32)))


@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_reliability_table_matches_sklearn_calibration_curve(n_bins):
    labels, probs = random_predictions(n=2000, seed=4)
    cal = metrics.calibration(labels, probs, n_bins)
    correct = probs.argmax(axis=1) == labels
    confidence = probs.max(axis=1)
    prob_true, prob_pred = calibration_curve(correct, confidence, n_bins=n_bins)
    filled = [b for b in cal["bins"] if b["count"]]
    np.testing.assert_allclose([b["accuracy"] for b in filled], prob_true, rtol=1e-12)
    np.testing.assert_allclose([b["confidence"] for b in filled], prob_pred, rtol=1e-12)
    assert sum(b["count"] for b in cal["bins"]) == len(labels)
    # ECE straight from its definition, one bin at a time.
    ece = sum(b["count"] / len(labels) * abs(b["accuracy"] - b["confidence"]) for b in filled)
    assert cal["ece"] == pytest.approx(ece)


def test_ece_by_hand():
    # Four predictions with confidences 0.9, 0.9, 0.6, 0.6; two bins [0, .5], (.5, 1]
    # all land in bin 2: mean confidence 0.75, accuracy 3/4 -> ECE |0.75 - 0.75| = 0.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    labels = np.array([0, 0, 1, 0])
    cal = metrics.calibration(labels, probs, n_bins=2)
    assert cal["ece"] == pytest.approx(0.0)
    assert cal["bins"][0] == {"lower": 0.0, "upper": 0.5, "count": 0,
                              "confidence": None, "accuracy": None}
    # With 4 bins: (.5, .75] holds the 0.6s (acc 1/2), (.75, 1] the 0.9s (acc 1):
    # ECE = 1/2 |0.5 - 0.6| + 1/2 |1.0 - 0.9| = 0.1.
    assert metrics.calibration(labels, probs, n_bins=4)["ece"] == pytest.approx(0.1)
    assert metrics.expected_calibration_error(labels, probs, 4) == pytest.approx(0.1)


def test_most_confused_pairs():
    cm = np.array([[5, 2, 0],
                   [7, 9, 1],
                   [2, 0, 4]])
    assert metrics.most_confused(cm, 3) == [(1, 0, 7), (0, 1, 2), (2, 0, 2)]
    assert metrics.most_confused(np.eye(3, dtype=int) * 4) == []
    assert metrics.most_confused(cm)[-1] == (1, 2, 1)      # zero cells are left out


def test_report_is_json_and_float32_probabilities_work():
    labels, probs = random_predictions(seed=5, dtype=np.float32)
    report = metrics.classification_report(labels, probs, n_confused=3)
    assert json.loads(json.dumps(report)) == report
    assert len(report["most_confused"]) == 3 and len(report["reliability"]) == 15
    ref = metrics.classification_report(labels, probs.astype(np.float64))
    assert report["accuracy"] == ref["accuracy"]
    assert report["log_loss"] == pytest.approx(ref["log_loss"], rel=1e-5)


def test_existing_helpers_keep_their_behaviour():
    labels = np.array([0, 1, 1, 2])
    predicted = np.array([0, 1, 2, 2])
    cm = metrics.confusion_matrix(labels, predicted, 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    assert metrics.per_class_accuracy(cm).tolist() == [1.0, 0.5, 1.0]
    assert metrics.accuracy(labels, predicted) == 0.75
    classes, top = metrics.top_k(np.array([[0.1, 0.7, 0.2]]), 2)
    assert classes.tolist() == [[1, 2]] and top.tolist() == [[0.7, 0.2]]
    assert metrics.top_k_accuracy(np.array([], int), np.zeros((0, 3))) == 0.0


def test_calibrated_reject_is_the_lowest_threshold_that_reaches_the_target():
    from barenet.metrics import calibrated_reject

    top = np.array([0.99, 0.95, 0.9, 0.8, 0.8, 0.7, 0.6])
    right = np.array([1, 1, 0, 1, 1, 1, 0], bool)       # by confidence: 1 1 0 1 1 1 0
    probs = np.zeros((7, 2))
    probs[:, 0], probs[:, 1] = top, 1 - top
    labels = np.where(right, 0, 1)
    # accuracy of the answered prefixes: 1, 1, 2/3, (0.8 twice, together) 4/5, 5/6, 5/7
    row = calibrated_reject(labels, probs, target=0.8, min_images=1)
    assert row["threshold"] == 0.7 and row["coverage"] == pytest.approx(6 / 7)
    assert row["accuracy"] == pytest.approx(5 / 6)
    assert calibrated_reject(labels, probs, target=0.9, min_images=1)["threshold"] == 0.95
    assert calibrated_reject(labels, probs, target=0.0, min_images=1)["threshold"] == 0.6
    assert calibrated_reject(1 - labels, probs, target=1.0, min_images=1)["threshold"] is None
    # Too few images to tell 99.5 % from 100 %: no threshold (the apps then use 0.9)
    assert calibrated_reject(labels, probs, target=0.8)["threshold"] is None
