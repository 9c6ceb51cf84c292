"""Prediction results, and the ``Predictor`` every runtime (torch, ONNX Runtime) is.

Pure Python and numpy: importing it never loads torch.
"""

from __future__ import annotations

import glob
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
from PIL import Image

from imgcls.config import TOP_K
from imgcls.data.images import ImageInput, as_rgb_image
from imgcls.data.preprocessing import Preprocessing
from imgcls.data.sources import prediction_inputs
from imgcls.errors import ConfigError, DataError

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


class Predictor(ABC):
    """A classifier that predicts, whatever runs it: ``Classifier`` (torch) and
    ``OnnxClassifier`` (ONNX Runtime) are this. Each runtime scores images
    (``probabilities``, ``image_probabilities``, ``score_paths``); taking a path, an image, a
    list, a folder or a glob, and ranking the classes, is done here once for both."""

    classes: list[str]
    preprocessing: Preprocessing
    config: dict[str, Any]

    @property
    def backbone(self) -> str:
        return str(self.config["backbone"]["name"])

    @abstractmethod
    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Class probabilities (images x classes) of decoded images, in one batch."""

    @abstractmethod
    def image_probabilities(self, image: Image.Image, *, tta: bool) -> np.ndarray:
        """One decoded image's class probabilities, averaged over the test-time views with
        ``tta``."""

    @abstractmethod
    def score_paths(
        self,
        paths: Sequence[Path],
        *,
        batch_size: int | None = None,
        workers: int | None = None,
        tta: bool = False,
    ) -> PathScores:
        """Class probabilities of the readable files among ``paths``; the others' reasons."""

    @overload
    def predict(self, image: ImageInput, *, top_k: int = ..., tta: bool = ...) -> Prediction: ...
    @overload
    def predict(
        self, image: list[ImageInput] | tuple[ImageInput, ...], *, top_k: int = ..., tta: bool = ...
    ) -> list[Prediction]: ...

    def predict(
        self,
        image: ImageInput | list[ImageInput] | tuple[ImageInput, ...],
        *,
        top_k: int = TOP_K,
        tta: bool = False,
    ) -> Prediction | list[Prediction]:
        """Classify one image: a file path, a PIL image, an HxWx3 uint8 array or encoded bytes;
        a list (or tuple) of them gives a list of predictions, in order, and so does a folder
        (searched recursively) or a glob pattern, as ``imgcls predict`` takes them (its
        unreadable files are left out with a warning; ``predict_paths`` gives their reasons).

        With ``tta``, probabilities are averaged over the centre crop, the whole image and
        the mirror image of each (torch only).
        """
        if isinstance(image, list | tuple):
            return [self.predict(one, top_k=top_k, tta=tta) for one in image]
        if names_many_images(image):
            return readable_predictions(self.predict_paths([image], top_k=top_k, tta=tta))  # type: ignore[list-item]
        path, pil = as_rgb_image(image, min_side=self.preprocessing.resize_size)
        return rank_classes(self.image_probabilities(pil, tta=tta)[None], self.classes, [path], top_k)[0]

    def predict_paths(
        self,
        inputs: Sequence[str | Path],
        *,
        top_k: int = TOP_K,
        tta: bool = False,
        batch_size: int | None = None,
        workers: int | None = None,
    ) -> PredictionRun:
        """Classify files, folders (recursively), glob patterns and the images of data sources
        (``data.sources.prediction_inputs``), decoded in parallel and scored in batches;
        unreadable files are listed with their reasons."""
        paths = prediction_inputs(inputs)
        if not paths:
            raise DataError(f"no image files found in {', '.join(map(str, inputs))}")
        scores = self.score_paths(paths, batch_size=batch_size, workers=workers, tta=tta)
        kept = [str(p) for p, ok in zip(paths, scores.readable, strict=True) if ok]
        unreadable = {str(paths[i]): reason for i, reason in scores.failures.items()}
        return PredictionRun(rank_classes(scores.probs, self.classes, kept, top_k), unreadable)
