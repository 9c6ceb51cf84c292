"""A fine-tune's epoch history: one CSV row an epoch, and the curves as a PNG."""

from __future__ import annotations

import csv

from PIL import Image

from imgcls._files import CURVES_FILE, HISTORY_FILE
from imgcls.training._history import write_history
from imgcls.training._loop import EpochRecord


def test_every_epoch_is_a_row_and_the_curves_are_a_picture(tmp_path):
    history = [
        EpochRecord(0, None, 0.9, 0.70, 0.65, 0.0, 0.1, 0.0),  # the probe: no training loss
        EpochRecord(1, 0.8, 0.6, 0.80, 0.78, 1e-3, 2.5, 40.0),
        EpochRecord(2, 0.5, 0.5, 0.85, 0.84, 5e-4, 2.4, 41.0),
    ]
    write_history(tmp_path, history)
    rows = list(csv.DictReader((tmp_path / HISTORY_FILE).open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["train_loss"] == "" and float(rows[2]["val_accuracy"]) == 0.85
    with Image.open(tmp_path / CURVES_FILE) as curves:
        assert curves.format == "PNG" and curves.width > 100
