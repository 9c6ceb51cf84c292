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
from typing import Any

import numpy as np
from PIL import Image

from imgcls._files import MODEL_SUBDIR, ONNX_FILE
from imgcls.config import PREDICT_BATCH_SIZE
from imgcls.data._pixels import to_input_array
from imgcls.data.images import UnreadableImageError, load_rgb, to_rgb
from imgcls.data.preprocessing import Preprocessing
from imgcls.errors import ConfigError, ModelFormatError
from imgcls.evaluation.metrics import softmax
from imgcls.inference.predictions import PathScores, Predictor

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


class OnnxClassifier(Predictor):
    """An exported classifier run by ONNX Runtime; the same ``Predictor`` as ``Classifier``."""

    def __init__(self, session: Any, config: dict[str, Any], path: Path) -> None:
        self.session = session
        self.config = config
        self.path = path
        self.classes: list[str] = list(config["classes"])
        self.preprocessing = Preprocessing.from_dict(config["preprocessing"])
        self._input = session.get_inputs()[0].name

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

    def image_probabilities(self, image: Image.Image, *, tta: bool) -> np.ndarray:
        _no_tta(tta)
        return self.probabilities([image])[0]

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
        _no_tta(tta)
        batch_size = batch_size or PREDICT_BATCH_SIZE
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


def _no_tta(tta: bool) -> None:
    if tta:
        raise ConfigError("test-time augmentation is not available with the ONNX runtime")
