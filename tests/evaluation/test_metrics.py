"""Metrics agree with scikit-learn's on fixed predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from imgcls.evaluation.metrics import (
    classification_report,
    expected_calibration_error,
    format_report,
    reliability_bins,
    softmax,
)


def _fixed_predictions(seed: int, n: int = 300, classes: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, classes, n)
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), y_true] += rng.uniform(0, 3, n)  # informative but imperfect
    return y_true, softmax(logits)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_report_matches_sklearn(seed):
    y_true, probs = _fixed_predictions(seed)
    y_pred = probs.argmax(1)
    classes = list("abcdef")
    labels = range(len(classes))
    report = classification_report(y_true, probs, classes)
    assert report["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert report["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    for k in ("3", "5"):
        assert report["top_k_accuracy"][k] == pytest.approx(
            skm.top_k_accuracy_score(y_true, probs, k=int(k), labels=labels)
        )
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)
        assert (report[f"{average}_precision"], report[f"{average}_recall"], report[f"{average}_f1"]) == (
            pytest.approx((p, r, f))
        )
    precision, recall, f1, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels)
    for i, name in enumerate(classes):
        row = report["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (precision[i], recall[i], f1[i], support[i])
        )
    assert report["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert report["log_loss"] == pytest.approx(skm.log_loss(y_true, probs, labels=labels))
    onehot = np.eye(len(classes))[y_true]
    assert report["brier"] == pytest.approx(((probs - onehot) ** 2).sum(1).mean())


def test_ece_by_hand():
    # two bins used: confidence 0.95 (2 images, 1 right) and 0.6 (2 images, both right)
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.4, 0.6]])
    y_true = np.array([0, 1, 0, 1])
    expected = (2 * abs(0.5 - 0.95) + 2 * abs(1.0 - 0.6)) / 4
    assert expected_calibration_error(y_true, probs) == pytest.approx(expected)
    bins = reliability_bins(y_true, probs)
    assert sum(b["count"] for b in bins) == 4 and len(bins) == 15


def test_perfectly_calibrated_predictions_have_small_ece():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 20000)
    y_true = (rng.uniform(size=20000) > confidence).astype(int)  # class 0 right with prob = confidence
    probs = np.stack([confidence, 1 - confidence], axis=1)
    assert expected_calibration_error(y_true, probs) < 0.02


def test_class_never_predicted_has_zero_precision_and_text_table():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
    report = classification_report(np.array([0, 1, 1]), probs, ["x", "y"])
    assert report["per_class"]["y"]["precision"] == 0.0
    text = format_report(report, ["x", "y"])
    assert "confusion matrix" in text and "accuracy 0.3333" in text and "ECE" in text
