"""Predict with an exported ONNX model through ONNX Runtime, without importing torch.

The export carries everything needed in its metadata (``imgcls`` key: classes, preprocessing,
backbone), so ``pip install 'imgcls[onnx]'`` (numpy, Pillow, onnxruntime) is a complete
inference install that starts in well under a second.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, overload

import numpy as np
from PIL import Image

from imgcls._files import MODEL_SUBDIR, ONNX_FILE
from imgcls.config import PREDICT_BATCH_SIZE, TOP_K
from imgcls.data._pixels import to_input_array
from imgcls.data.images import ImageInput, UnreadableImageError, as_rgb_image, load_rgb, to_rgb
from imgcls.data.preprocessing import Preprocessing
from imgcls.data.sources import prediction_inputs
from imgcls.errors import ConfigError, DataError, ModelFormatError
from imgcls.evaluation.metrics import softmax
from imgcls.inference.predictions import (
    PathScores,
    Prediction,
    PredictionRun,
    names_many_images,
    rank_classes,
    readable_predictions,
)

METADATA_KEY = "imgcls"


def find_onnx_file(path: str | Path) -> Path:
    """``path`` itself if it is a file, else ``model.onnx`` in it or in its ``model/``."""
    path = Path(path)
    for candidate in (path, path / ONNX_FILE, path / MODEL_SUBDIR / ONNX_FILE):
        if candidate.is_file():
            return candidate
    raise ModelFormatError(
        f"no ONNX model at {path}: export one first with 'imgcls export {path} --format onnx'"
    )


class OnnxClassifier:
    """An exported classifier run by ONNX Runtime; same prediction API as ``Classifier``."""

    def __init__(self, session: Any, config: dict[str, Any], path: Path) -> None:
        self.session = session
        self.config = config
        self.path = path
        self.classes: list[str] = list(config["classes"])
        self.preprocessing = Preprocessing.from_dict(config["preprocessing"])
        self._input = session.get_inputs()[0].name

    @property
    def backbone(self) -> str:
        return str(self.config["backbone"]["name"])

    @classmethod
    def load(cls, path: str | Path, *, threads: int | None = None) -> OnnxClassifier:
        import onnxruntime as ort

        onnx_path = find_onnx_file(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        metadata = session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in metadata:
            raise ModelFormatError(f"{onnx_path} has no imgcls metadata; export it with 'imgcls export'")
        return cls(session, json.loads(metadata[METADATA_KEY]), onnx_path)

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Class probabilities (images x classes) of decoded RGB images."""
        if not images:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        batch = np.stack([to_input_array(to_rgb(image), self.preprocessing) for image in images])
        logits = self.session.run(None, {self._input: batch})[0]
        return softmax(logits.astype(np.float64)).astype(np.float32)

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
        a list (or tuple) of them, a folder or a glob pattern give a list of predictions, as
        ``Classifier.predict`` does."""
        if tta:
            raise ConfigError("test-time augmentation is not available with the ONNX runtime")
        if isinstance(image, list | tuple):
            return [self.predict(one, top_k=top_k) for one in image]
        if names_many_images(image):
            return readable_predictions(self.predict_paths([image], top_k=top_k))  # type: ignore[list-item]
        path, pil = as_rgb_image(image, min_side=self.preprocessing.resize_size)
        return self._top([pil], [path], top_k)[0]

    def _top(self, images: Sequence[Image.Image], paths: Sequence[str | None], k: int) -> list[Prediction]:
        return rank_classes(self.probabilities(images), self.classes, paths, k)

    def score_paths(
        self,
        paths: Sequence[Path],
        *,
        batch_size: int | None = None,
        workers: int | None = None,
        tta: bool = False,
    ) -> PathScores:
        """Decode (``workers`` threads, default one) and score files in batches of ``batch_size``
        (default ``PREDICT_BATCH_SIZE``); unreadable ones are listed."""
        batch_size = batch_size or PREDICT_BATCH_SIZE
        if tta:
            raise ConfigError("test-time augmentation is not available with the ONNX runtime")
        failures: dict[int, str] = {}
        probs: list[np.ndarray] = []
        with ThreadPoolExecutor(max(workers or 0, 1)) as pool:
            for start in range(0, len(paths), batch_size):
                chunk = list(range(start, min(start + batch_size, len(paths))))
                decoded = list(pool.map(lambda i: self._decode(paths[i]), chunk))
                for i, result in zip(chunk, decoded, strict=True):
                    if isinstance(result, str):
                        failures[i] = result
                probs.append(self.probabilities([d for d in decoded if not isinstance(d, str)]))
        readable = np.array([i not in failures for i in range(len(paths))], dtype=bool)
        stacked = np.concatenate(probs) if probs else np.zeros((0, len(self.classes)), dtype=np.float32)
        return PathScores(stacked, readable, failures)

    def _decode(self, path: Path) -> Image.Image | str:
        try:
            return load_rgb(path, min_side=self.preprocessing.resize_size)
        except UnreadableImageError as exc:
            return exc.reason

    def predict_paths(
        self,
        inputs: Sequence[str | Path],
        *,
        top_k: int = TOP_K,
        batch_size: int | None = None,
        workers: int | None = None,
    ) -> PredictionRun:
        paths = prediction_inputs(inputs)
        if not paths:
            raise DataError(f"no image files found in {', '.join(map(str, inputs))}")
        scores = self.score_paths(paths, batch_size=batch_size, workers=workers)
        kept = [str(p) for p, ok in zip(paths, scores.readable, strict=True) if ok]
        predictions = rank_classes(scores.probs, self.classes, kept, top_k)
        return PredictionRun(predictions, {str(paths[i]): r for i, r in scores.failures.items()})
