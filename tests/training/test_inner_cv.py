"""The inner folds a head's settings are chosen on, within the training split."""

from __future__ import annotations

import numpy as np
import pytest

from imgcls.training._inner_cv import class_weights, fold_score, inner_folds


def test_folds_are_stratified_seeded_and_refused_when_a_class_cannot_fill_two():
    labels = np.array([0] * 9 + [1] * 6)
    folds = inner_folds(labels, seed=0)
    assert folds is not None and sorted(set(folds.tolist())) == [0, 1, 2]
    for fold in range(3):
        assert np.bincount(labels[folds == fold]).tolist() == [3, 2]
    assert np.array_equal(folds, inner_folds(labels, seed=0))
    assert inner_folds(np.array([0, 0, 0, 1, 1]), seed=0).max() == 1  # the small class caps the folds at 2
    assert inner_folds(np.array([0, 0, 0, 1]), seed=0) is None


def test_balanced_scores_weigh_every_class_the_same():
    labels = np.array([0] * 8 + [1] * 2)
    always_zero = np.zeros(10, dtype=int)
    assert fold_score(labels, always_zero, num_classes=2, balanced=False) == pytest.approx(0.8)
    assert fold_score(labels, always_zero, num_classes=2, balanced=True) == pytest.approx(0.5)
    weights = class_weights(labels, 2)
    assert weights.tolist() == pytest.approx([10 / 16, 10 / 4])
    assert (weights * np.bincount(labels)).tolist() == pytest.approx([5.0, 5.0])
