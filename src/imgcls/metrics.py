"""Classification metrics from true and predicted class indices (pure numpy)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``matrix[t, p]`` counts images of true class ``t`` predicted as ``p``."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class precision/recall/F1/support, confusion matrix."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    matrix = confusion_matrix(y_true, y_pred, len(classes))
    true_positive = np.diag(matrix).astype(float)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision = _safe_divide(true_positive, predicted)
    recall = _safe_divide(true_positive, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    present = support > 0
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    return {
        "n": len(y_true),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.zeros_like(numerator, dtype=float)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def format_report(report: dict[str, Any], classes: Sequence[str]) -> str:
    """A plain-text table of the per-class metrics and the confusion matrix."""
    width = max(12, *(len(c) for c in classes))
    lines = [
        f"images {report['n']}  accuracy {report['accuracy']:.4f}  balanced accuracy "
        f"{report['balanced_accuracy']:.4f}  macro F1 {report['macro_f1']:.4f}",
        "",
        f"{'class':<{width}}  precision  recall     f1  support",
    ]
    for name in classes:
        row = report["per_class"][name]
        lines.append(
            f"{name:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  "
            f"{row['f1']:5.3f}  {row['support']:7d}"
        )
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    cell = max(5, *(len(str(v)) for row in report["confusion_matrix"] for v in row))
    lines.append(" " * width + "  " + " ".join(f"{i:>{cell}}" for i in range(len(classes))))
    for i, (name, row) in enumerate(zip(classes, report["confusion_matrix"], strict=True)):
        lines.append(f"{name:<{width}}  " + " ".join(f"{v:>{cell}}" for v in row) + f"   [{i}]")
    return "\n".join(lines)
