"""Slow tier: the real packaged weights on the real data sets in ../shared/datasets.

These guard accuracy: a regression in decoding, preprocessing, weight mapping or the head
turns CI red. They assert accuracy, never time.
"""

from __future__ import annotations

import pytest

import imgcls
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


def test_clothing_small_probe_on_the_test_split(tmp_path):
    data = shared_dataset("clothing_small")
    clf = imgcls.train(data, tmp_path / "run")
    assert clf.metrics["test"]["n"] == 372
    assert clf.metrics["test"]["accuracy"] >= 0.87
