"""Metrics agree with scikit-learn's on fixed predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from imgcls.metrics import classification_report, format_report


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_report_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 4, 200))
    classes = ["a", "b", "c", "d"]
    report = classification_report(y_true, y_pred, classes)
    assert report["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert report["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert report["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    precision, recall, f1, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=range(4))
    for i, name in enumerate(classes):
        row = report["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (precision[i], recall[i], f1[i], support[i])
        )
    assert report["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=range(4)).tolist()


def test_class_never_predicted_has_zero_precision_and_text_table():
    report = classification_report(np.array([0, 1, 1]), np.array([0, 0, 0]), ["x", "y"])
    assert report["per_class"]["y"]["precision"] == 0.0
    text = format_report(report, ["x", "y"])
    assert "confusion matrix" in text and "accuracy 0.3333" in text
