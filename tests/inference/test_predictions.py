"""The Predictor base both runtimes share: what predict takes, and ranking the classes.

A numpy-only predictor (the mean colour's strongest channel is the class) stands in for a
network, so these tests check the base itself, with no torch and no model.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image

from imgcls.data.preprocessing import Preprocessing
from imgcls.errors import ConfigError, DataError
from imgcls.inference.predictions import PathScores, Predictor, rank_classes
from tests.conftest import write_class_folders


class StrongestChannel(Predictor):
    def __init__(self) -> None:
        self.classes = ["red", "green", "blue"]
        self.preprocessing = Preprocessing(32, 1.0, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        self.config = {"backbone": {"name": "strongest-channel"}}

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        means = np.array([np.asarray(image, dtype=np.float64).mean(axis=(0, 1)) for image in images])
        scores = np.exp(means / 16)
        return (scores / scores.sum(axis=1, keepdims=True)).astype(np.float32)

    def image_probabilities(self, image: Image.Image, *, tta: bool) -> np.ndarray:
        if tta:
            raise ConfigError("no test-time views here")
        return self.probabilities([image])[0]

    def score_paths(self, paths, *, batch_size=None, workers=None, tta=False) -> PathScores:
        readable, images, failures = [], [], {}
        for i, path in enumerate(paths):
            try:
                images.append(Image.open(path).convert("RGB"))
                readable.append(True)
            except OSError:
                failures[i] = "not an image"
                readable.append(False)
        return PathScores(self.probabilities(images), np.array(readable), failures)


def test_predict_takes_a_path_an_image_an_array_bytes_and_a_list(tmp_path):
    folder = write_class_folders(tmp_path / "colours", per_class=2)
    predictor = StrongestChannel()
    path = folder / "green" / "green_000.png"
    assert predictor.predict(path).label == "green" and predictor.predict(path).path == str(path)
    image = Image.open(path)
    assert predictor.predict(image).label == predictor.predict(np.asarray(image)).label == "green"
    assert predictor.predict(path.read_bytes(), top_k=2).scores[1].label != "green"
    listed = predictor.predict([folder / "red" / "red_000.png", path])
    assert [p.label for p in listed] == ["red", "green"]
    assert predictor.backbone == "strongest-channel"


def test_a_folder_or_a_glob_gives_a_list_and_unreadable_files_are_left_out(tmp_path, caplog):
    folder = write_class_folders(tmp_path / "colours", per_class=2)
    (folder / "blue" / "broken.png").write_bytes(b"not a png")
    predictor = StrongestChannel()
    found = predictor.predict(folder)
    assert sorted(p.label for p in found) == ["blue", "blue", "green", "green", "red", "red"]
    assert "could not be read" in caplog.text
    assert [p.label for p in predictor.predict(str(folder / "red" / "*.png"))] == ["red", "red"]
    run = predictor.predict_paths([folder / "blue"])
    assert len(run.predictions) == 2 and list(run.unreadable) == [str(folder / "blue" / "broken.png")]
    with pytest.raises(DataError, match="matches no files"):
        predictor.predict_paths([tmp_path / "empty-*.png"])
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="no image files found"):
        predictor.predict_paths([tmp_path / "none"])
    with pytest.raises(ConfigError):
        predictor.predict(folder / "red" / "red_000.png", tta=True)


def test_rank_classes_orders_by_probability_and_clips_k():
    probs = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]], dtype=np.float32)
    ranked = rank_classes(probs, ["a", "b", "c"], ["x", None], k=10)
    assert [s.label for s in ranked[0].scores] == ["b", "c", "a"]
    assert ranked[1].label == "a" and ranked[1].probability == pytest.approx(0.6) and ranked[1].path is None
    assert ranked[0].to_dict()["predictions"][0] == {
        "label": "b",
        "index": 1,
        "probability": pytest.approx(0.5),
    }
    with pytest.raises(ConfigError, match="top-k must be at least 1"):
        rank_classes(probs, ["a", "b", "c"], ["x", "y"], k=0)


def test_the_predictor_base_imports_no_torch():
    code = "import sys, imgcls.inference.predictions; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        == "False\n"
    )
