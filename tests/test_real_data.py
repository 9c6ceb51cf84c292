"""Slow tier: the real packaged weights on the real data sets in ../shared/datasets.

These guard accuracy: a regression in decoding, preprocessing, weight mapping, the head or
calibration turns CI red. They assert accuracy, never time.
"""

from __future__ import annotations

import pytest

import imgcls
from imgcls.config import TrainConfig
from tests.conftest import shared_dataset

pytestmark = pytest.mark.slow


def test_hymenoptera_default_probe(tmp_path):
    data = shared_dataset("hymenoptera")
    clf = imgcls.train(data, tmp_path / "run")
    val = clf.metrics["val"]
    assert val["n"] == 153  # the GIF placeholder is an image too; nothing unreadable
    assert val["accuracy"] >= 0.94
    reloaded = imgcls.load(tmp_path / "run")
    assert reloaded.evaluate(data, split="val").accuracy == pytest.approx(val["accuracy"])


def test_hymenoptera_cross_validation(tmp_path):
    result = imgcls.cross_validate(shared_dataset("hymenoptera"), tmp_path / "cv", folds=5)
    assert len(result.per_fold) == 5 and result.n_images == 398
    assert result.summary["accuracy"]["mean"] >= 0.93
    assert result.summary["accuracy"]["std"] < 0.05


def test_clothing_small_probe_and_calibration_on_the_test_split(tmp_path):
    data = shared_dataset("clothing_small")
    plain = imgcls.train(data, tmp_path / "plain")
    assert plain.metrics["test"]["n"] == 372
    assert plain.metrics["test"]["accuracy"] >= 0.87
    calibrated = imgcls.train(data, tmp_path / "calibrated", config=TrainConfig(calibrate=True))
    assert calibrated.metrics["test"]["accuracy"] == plain.metrics["test"]["accuracy"]
    assert calibrated.metrics["test"]["ece"] < plain.metrics["test"]["ece"]
