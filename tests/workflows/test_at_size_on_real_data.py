"""Slow tier: the paths built for large data sets (a memory-mapped feature matrix, the head's
chunked passes) give the in-memory path's features, head and metrics on a real data set."""

from __future__ import annotations

import json

import numpy as np
import pytest

import imgcls
from imgcls.models import feature_store
from imgcls.training import linear_head as head
from tests.conftest import shared_dataset

pytestmark = pytest.mark.slow


def test_mapped_features_and_chunked_fits_change_nothing_on_hymenoptera(tmp_path, monkeypatch):
    data = shared_dataset("hymenoptera")
    plain = imgcls.train(data, tmp_path / "plain")
    monkeypatch.setattr(feature_store, "MAPPED_ABOVE_BYTES", 0)  # the matrix a mapped file
    monkeypatch.setattr(head, "CHUNK_ROWS", 64)  # moments, losses and gradients in chunks
    at_size = imgcls.train(data, tmp_path / "at-size")
    summary = [
        json.loads((tmp_path / run / "metrics.json").read_text())["head"] for run in ("plain", "at-size")
    ]
    assert summary[0]["C"] == summary[1]["C"]
    for split in ("train", "val"):
        assert at_size.metrics[split]["accuracy"] == plain.metrics[split]["accuracy"]
    assert at_size.metrics["val"]["log_loss"] == pytest.approx(plain.metrics["val"]["log_loss"], rel=1e-4)
    images = sorted((data / "val" / "bees").iterdir())[:8]
    np.testing.assert_allclose(
        [p.probability for p in at_size.predict(images)],
        [p.probability for p in plain.predict(images)],
        atol=1e-4,
    )
