"""Model directories saved by an earlier imgcls load and predict exactly as they did then."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import imgcls

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "saved_models"


@pytest.mark.parametrize("kind", ["probe", "finetune"])
def test_a_model_saved_before_the_restructuring_predicts_the_same(kind):
    expected = json.loads((FIXTURES / f"{kind}_predictions.json").read_text())
    clf = imgcls.load(FIXTURES / kind)
    for row in expected:
        prediction = clf.predict(str(FIXTURES / "images" / row["image"]), top_k=3)
        assert prediction.label == row["label"], row["image"]
        got = {score.label: score.probability for score in prediction.scores}
        assert got.keys() == row["probabilities"].keys()
        for label, probability in row["probabilities"].items():
            assert got[label] == pytest.approx(probability, abs=1e-6), (row["image"], label)
