"""Prediction results, shared by every runtime (torch, ONNX Runtime, the HTTP server).

Pure Python and numpy: importing it never loads torch.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassScore:
    label: str
    index: int
    probability: float


@dataclass(frozen=True)
class Prediction:
    """Top-k classes for one image, most likely first."""

    path: str | None
    scores: tuple[ClassScore, ...]

    @property
    def label(self) -> str:
        return self.scores[0].label

    @property
    def probability(self) -> float:
        return self.scores[0].probability

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``imgcls predict --json`` and ``POST /predict``."""
        return {
            "path": self.path,
            "predictions": [
                {"label": s.label, "index": s.index, "probability": s.probability} for s in self.scores
            ],
        }


@dataclass
class PredictionRun:
    """Predictions for the readable inputs and the reason each unreadable one was skipped."""

    predictions: list[Prediction]
    unreadable: dict[str, str] = field(default_factory=dict)


@dataclass
class PathScores:
    """Class probabilities of the readable files among some paths, in input order."""

    probs: np.ndarray
    readable: np.ndarray
    failures: dict[int, str] = field(default_factory=dict)


def rank_classes(
    probs: np.ndarray, classes: Sequence[str], paths: Sequence[str | None], k: int
) -> list[Prediction]:
    """One ``Prediction`` per row of ``probs`` with its ``k`` most probable classes."""
    if k < 1:
        raise ConfigError(f"top-k must be at least 1, got {k}")
    k = min(k, len(classes))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [
        Prediction(path, tuple(ClassScore(classes[i], int(i), float(row[i])) for i in best))
        for path, row, best in zip(paths, probs, order, strict=True)
    ]


def names_many_images(image: object) -> bool:
    """Whether one ``predict`` argument names several images, as the CLI takes them: a folder
    or a glob pattern (an existing file is one image, whatever its name)."""
    if not isinstance(image, str | Path):
        return False
    path = Path(image).expanduser()
    return not path.is_file() and (path.is_dir() or glob.has_magic(str(image)))


def readable_predictions(run: PredictionRun) -> list[Prediction]:
    """A run's predictions, with a warning for the inputs that had none (``predict_paths``
    returns them with their reasons)."""
    if run.unreadable:
        first, reason = next(iter(run.unreadable.items()))
        log.warning(
            "%d image(s) could not be read and have no prediction (%s: %s); predict_paths lists each",
            len(run.unreadable), first, reason,
        )  # fmt: skip
    return run.predictions
