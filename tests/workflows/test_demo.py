"""The demo's built-in data are real images shipped by a dependency."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imgcls.data.sources.folders import scan_dataset
from imgcls.workflows.demo import DIGIT_SIZE, run_demo, write_digits


def test_digits_are_written_as_a_class_folder_tree(tmp_path):
    folder = write_digits(tmp_path / "digits")
    scan = scan_dataset(folder)
    assert scan.classes == [str(d) for d in range(10)]
    assert len(scan.records) == 1797
    image = Image.open(folder / scan.records[0].path)
    assert image.size == (DIGIT_SIZE, DIGIT_SIZE)
    assert np.asarray(image).std() > 30  # strokes, not a blank or noise-free square


@pytest.mark.slow
def test_the_demo_gets_nearly_all_of_its_sample_predictions_right(tmp_path):
    lines: list[str] = []
    right = run_demo(tmp_path / "demo", overwrite=False, echo=lines.append)
    assert right >= 9, "\n".join(lines)
    assert f"{right} of 10 sample predictions right" in lines
