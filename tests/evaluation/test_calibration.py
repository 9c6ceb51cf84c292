"""Temperature scaling recovers a known temperature and lowers ECE without changing accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from imgcls.evaluation.calibration import fit_temperature
from imgcls.evaluation.metrics import expected_calibration_error, softmax


def test_recovers_the_temperature_of_overconfident_logits():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (5000, 5))
    y = np.array([rng.choice(5, p=p) for p in softmax(true_logits)])
    overconfident = true_logits * 3.0  # a model three times too sure of itself
    temperature = fit_temperature(overconfident, y)
    assert temperature == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(y, softmax(overconfident))
    after = expected_calibration_error(y, softmax(overconfident / temperature))
    assert after < before / 2
    assert (softmax(overconfident).argmax(1) == softmax(overconfident / temperature).argmax(1)).all()
