"""A cosine k-nearest-neighbour head on frozen features, with k chosen on the training split.

The fitted head keeps the training images' features as its bank: prediction compares a new
image with every one of them, so the saved model grows with the training set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from imgcls.models.heads import KNNHead
from imgcls.system.devices import CPU, place
from imgcls.training._inner_cv import CV_FOLDS, class_weights, fold_score, inner_folds

log = logging.getLogger(__name__)

K_GRID = (1, 3, 5, 10, 20, 50, 100)
DEFAULT_K = 5  # when a class is too small to cross-validate
QUERY_CHUNK = 1024  # held-out images compared with the bank at once (bounds the memory)


@dataclass
class KNNFit:
    layer: KNNHead
    cv_accuracy: dict[int, float]


def fit_knn_head(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    seed: int,
    balanced: bool,
    device: torch.device = CPU,
) -> KNNFit:
    """The kNN head over all of ``features``, with k chosen by inner cross-validation whose
    neighbour searches run on ``device``; the head comes back on the CPU."""
    fold_of = inner_folds(labels, seed=seed)
    scores: dict[int, float] = {}
    if fold_of is not None:
        scores = _cross_validate(
            features, labels, fold_of, num_classes=num_classes, balanced=balanced, device=device
        )
    k = _choose_k(scores, n_train=len(labels))
    log.info(
        "kNN head: k=%d chosen by %d-fold CV on train (%saccuracy %s)",
        k,
        CV_FOLDS,
        "balanced " if balanced else "",
        f"{scores[k]:.3f}" if k in scores else "not measured: a class is too small",
    )
    return KNNFit(_head(features, labels, num_classes, k, balanced), scores)


def _head(features: np.ndarray, labels: np.ndarray, num_classes: int, k: int, balanced: bool) -> KNNHead:
    head = KNNHead(torch.from_numpy(features), torch.from_numpy(labels), num_classes, k)
    if balanced:
        head.class_weight.copy_(torch.from_numpy(class_weights(labels, num_classes)))
    return head


def _cross_validate(
    features: np.ndarray,
    labels: np.ndarray,
    fold_of: np.ndarray,
    *,
    num_classes: int,
    balanced: bool,
    device: torch.device,
) -> dict[int, float]:
    """Each k's inner-CV score: neighbours are found once per fold, at the largest k."""
    smallest_bank = min(int((fold_of != f).sum()) for f in np.unique(fold_of))
    grid = [k for k in K_GRID if k <= smallest_bank]
    predicted = {k: np.empty_like(labels) for k in grid}
    for fold in np.unique(fold_of):
        train, held_out = fold_of != fold, fold_of == fold
        head = place(_head(features[train], labels[train], num_classes, max(grid), balanced), device)
        rows = np.flatnonzero(held_out)
        with torch.inference_mode():
            for start in range(0, len(rows), QUERY_CHUNK):
                chunk = rows[start : start + QUERY_CHUNK]
                query = place(torch.from_numpy(features[chunk]), device)
                similarity, index = head.neighbours(query, max(grid))
                for k in grid:
                    predicted[k][chunk] = head.vote(similarity[:, :k], index[:, :k]).argmax(-1).cpu().numpy()
    return {
        k: fold_score(labels, p, num_classes=num_classes, balanced=balanced) for k, p in predicted.items()
    }


def _choose_k(scores: dict[int, float], *, n_train: int) -> int:
    """The best-scoring k; on a tie the larger (a smoother vote)."""
    if not scores:
        return min(DEFAULT_K, n_train)
    best = max(scores.values())
    return max(k for k, score in scores.items() if score >= best - 1e-12)
