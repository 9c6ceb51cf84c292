"""Choosing a head's settings on the training split only: the inner folds and their score.

Every head (the linear one's C, the MLP's width and stopping epoch, the kNN's k) is tuned on
folds of the images it is fitted on, so the validation and test figures reported afterwards
judge a model that never saw them.
"""

from __future__ import annotations

import numpy as np

from imgcls.data.splits import stratified_folds
from imgcls.evaluation.metrics import balanced_accuracy

CV_FOLDS = 3


def inner_folds(labels: np.ndarray, *, seed: int, folds: int = CV_FOLDS) -> np.ndarray | None:
    """A stratified fold number for each training image, or ``None`` when the smallest class
    has too few images to appear in two folds."""
    usable = min(folds, int(np.bincount(labels).min()) if len(labels) else 0)
    if usable < 2:
        return None
    return np.array(stratified_folds(labels.tolist(), folds=usable, seed=seed))


def fold_score(labels: np.ndarray, predicted: np.ndarray, *, num_classes: int, balanced: bool) -> float:
    """Accuracy of ``predicted`` class indices, or balanced accuracy with ``balanced``."""
    if balanced:
        return balanced_accuracy(labels, predicted, num_classes)
    return float((predicted == labels).mean())


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse class frequency, ``n / (classes x count)``: every class weighs the same in total."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return len(labels) / (num_classes * np.maximum(counts, 1.0))
