"""Classification metrics from true class indices and predicted probabilities (pure numpy).

Every function takes ``probs`` (images x classes, rows summing to 1); the predicted class is
the arg-max. Keys of ``classification_report`` are stable and documented in docs/evaluation.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ECE_BINS = 15
TOP_K = (3, 5)
_EPS = 1e-15


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``matrix[t, p]`` counts images of true class ``t`` predicted as ``p``."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Mean recall over the classes present in ``y_true``."""
    _, recall, _, support = _per_class(confusion_matrix(y_true, y_pred, num_classes))
    return float(recall[support > 0].mean())


def classification_report(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced and top-k accuracy, macro/weighted P/R/F1, per-class table,
    confusion matrix, log loss, Brier score, expected calibration error and reliability bins."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if len(y_true) == 0:
        return {"n": 0, "accuracy": float("nan")}
    y_pred = probs.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, len(classes))
    precision, recall, f1, support = _per_class(matrix)
    present = support > 0
    weights = support / support.sum()
    reliability = reliability_bins(y_true, probs)
    report: dict[str, Any] = {
        "n": len(y_true),
        "accuracy": float((y_true == y_pred).mean()),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred, len(classes)),
        "top_k_accuracy": {str(k): top_k_accuracy(y_true, probs, k) for k in TOP_K if k < len(classes)},
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "weighted_precision": float((precision * weights).sum()),
        "weighted_recall": float((recall * weights).sum()),
        "weighted_f1": float((f1 * weights).sum()),
        "log_loss": log_loss(y_true, probs),
        "brier": brier_score(y_true, probs),
        "ece": _ece(reliability, len(y_true)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion_matrix": matrix.tolist(),
        "reliability": reliability,
    }
    return report


def _per_class(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    true_positive = np.diag(matrix).astype(float)
    support = matrix.sum(axis=1)
    precision = _safe_divide(true_positive, matrix.sum(axis=0))
    recall = _safe_divide(true_positive, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return precision, recall, f1, support


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.zeros_like(numerator, dtype=float)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Share of images whose true class is among the ``k`` most probable."""
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((top == y_true[:, None]).any(axis=1).mean())


def log_loss(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class."""
    return float(-np.log(np.clip(probs[np.arange(len(y_true)), y_true], _EPS, 1.0)).mean())


def brier_score(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean over images of the squared distance to the one-hot truth (0 best, 2 worst)."""
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(y_true)), y_true] = 1.0
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def reliability_bins(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Equal-width bins of top-1 confidence with their mean confidence and accuracy."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        rows.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": count,
                "confidence": float(confidence[members].mean()) if count else 0.0,
                "accuracy": float(correct[members].mean()) if count else 0.0,
            }
        )
    return rows


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Count-weighted mean |accuracy - confidence| over equal-width confidence bins."""
    return _ece(reliability_bins(y_true, probs, bins), len(y_true))


def _ece(rows: list[dict[str, float]], n: int) -> float:
    return float(sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows) / n)


def format_report(report: dict[str, Any], classes: Sequence[str]) -> str:
    """A plain-text summary, per-class table and confusion matrix."""
    top_k = "  ".join(f"top-{k} {v:.4f}" for k, v in report["top_k_accuracy"].items())
    lines = [
        f"images {report['n']}  accuracy {report['accuracy']:.4f}  balanced accuracy "
        f"{report['balanced_accuracy']:.4f}  {top_k}".rstrip(),
        f"macro F1 {report['macro_f1']:.4f}  weighted F1 {report['weighted_f1']:.4f}  log loss "
        f"{report['log_loss']:.4f}  Brier {report['brier']:.4f}  ECE {report['ece']:.4f}",
        "",
    ]
    return "\n".join(lines + _class_table(report, classes) + [""] + _confusion_table(report, classes))


def _class_table(report: dict[str, Any], classes: Sequence[str]) -> list[str]:
    width = max(12, *(len(c) for c in classes))
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for name in classes:
        row = report["per_class"][name]
        lines.append(
            f"{name:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  "
            f"{row['f1']:5.3f}  {row['support']:7d}"
        )
    return lines


def _confusion_table(report: dict[str, Any], classes: Sequence[str]) -> list[str]:
    width = max(12, *(len(c) for c in classes))
    cell = max(5, *(len(str(v)) for row in report["confusion_matrix"] for v in row))
    lines = ["confusion matrix (rows: true, columns: predicted)"]
    lines.append(" " * width + "  " + " ".join(f"{i:>{cell}}" for i in range(len(classes))))
    for i, (name, row) in enumerate(zip(classes, report["confusion_matrix"], strict=True)):
        lines.append(f"{name:<{width}}  " + " ".join(f"{v:>{cell}}" for v in row) + f"   [{i}]")
    return lines


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)
