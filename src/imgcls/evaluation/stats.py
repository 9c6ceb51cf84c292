"""Summaries and tests over repeated measurements (cross-validation folds) and paired predictions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def summarize(values: Sequence[float]) -> dict[str, float | list[float]]:
    """Mean, sample standard deviation and a t-based 95% confidence interval of the mean."""
    from scipy import stats

    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    if len(array) < 2:
        return {"mean": mean, "std": float("nan"), "ci95": [float("nan"), float("nan")]}
    std = float(array.std(ddof=1))
    half = float(stats.t.ppf(0.975, len(array) - 1) * std / math.sqrt(len(array)))
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def corrected_paired_t_test(
    a: Sequence[float], b: Sequence[float], *, test_train_ratio: float
) -> dict[str, float]:
    """Nadeau and Bengio's corrected resampled t-test for paired cross-validation scores.

    A plain paired t-test over folds overstates significance because the training sets
    overlap; the variance is inflated by ``1/k + n_test/n_train``.
    """
    from scipy import stats

    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    k = len(diff)
    mean = float(diff.mean())
    variance = float(diff.var(ddof=1)) if k > 1 else float("nan")
    corrected = (1.0 / k + test_train_ratio) * variance
    if not corrected > 0:  # identical differences in every fold (or one fold): no test possible
        return {"mean_difference": mean, "t": float("nan"), "p_value": float("nan"), "df": k - 1}
    t = mean / math.sqrt(corrected)
    p = float(2 * stats.t.sf(abs(t), k - 1))
    return {"mean_difference": mean, "t": float(t), "p_value": p, "df": k - 1}


def mcnemar_test(first_correct: Sequence[bool], second_correct: Sequence[bool]) -> dict[str, Any]:
    """Exact McNemar test of two classifiers scored on the same images.

    Only the images exactly one of them gets right carry information; under the null
    hypothesis each of those is equally likely to favour either, so the count is
    Binomial(n, 1/2) and the two-sided p-value is ``min(1, 2 P(X <= min(b, c)))``.
    """
    from scipy import stats

    a = np.asarray(first_correct, dtype=bool)
    b = np.asarray(second_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes differ in length: {a.shape} vs {b.shape}")
    only_first, only_second = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_first + only_second
    tail = float(stats.binom.cdf(min(only_first, only_second), discordant, 0.5)) if discordant else 0.5
    p = min(1.0, 2 * tail)
    return {
        "test": "exact McNemar",
        "only_first_correct": only_first,
        "only_second_correct": only_second,
        "p_value": p,
    }
