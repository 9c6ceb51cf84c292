"""Likely label errors from out-of-fold class probabilities, by confident learning.

Confident learning (Northcutt, Jiang and Chuang, 2021) trusts a prediction only as far as the
model is confident in that class in general: class ``j``'s threshold is the mean probability
the model gives ``j`` on the images labelled ``j``. An image labelled ``i`` counts towards the
off-diagonal of the "confident joint" when some other class ``j`` reaches its own threshold
and is the most probable such class; that count estimates how many labels are wrong. The
flagged images are that many with the lowest self-confidence, the probability given to the
label they carry (cleanlab's ``low_self_confidence`` filter): a wrong label is given a low
probability whether or not the model is sure of the right one.

The probabilities must be out-of-fold (each image scored by a model that did not train on
it), or every training label looks right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelIssues:
    flagged: np.ndarray  # bool per image: a likely label error
    suggested: np.ndarray  # class index per image: the most probable class other than its label
    self_confidence: np.ndarray  # probability given to the image's own label
    thresholds: np.ndarray  # per class: mean self-confidence of the images labelled with it
    estimated: int = 0  # label errors the confident joint counts (how many are flagged)

    def ranked(self) -> np.ndarray:
        """Every image, most likely mislabelled first (lowest self-confidence)."""
        return np.argsort(self.self_confidence, kind="stable")

    def flagged_ranked(self) -> np.ndarray:
        """The flagged images, most likely mislabelled first."""
        order = self.ranked()
        return order[self.flagged[order]]


def find_label_issues(labels: np.ndarray, probs: np.ndarray) -> LabelIssues:
    """Confident learning on ``labels`` (class indices) and out-of-fold ``probs`` (images x classes)."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    num_classes = probs.shape[1]
    thresholds = np.array(
        [probs[labels == j, j].mean() if (labels == j).any() else 1.0 for j in range(num_classes)]
    )
    confident = probs >= thresholds[None, :]
    confident_class = np.where(confident, probs, -1.0).argmax(axis=1)
    estimated = int(np.sum(confident.any(axis=1) & (confident_class != labels)))
    rows = np.arange(len(labels))
    self_confidence = probs[rows, labels]
    others = probs.copy()
    others[rows, labels] = -1.0
    flagged = np.zeros(len(labels), dtype=bool)
    flagged[np.argsort(self_confidence, kind="stable")[:estimated]] = True
    return LabelIssues(flagged, others.argmax(axis=1), self_confidence, thresholds, estimated)
