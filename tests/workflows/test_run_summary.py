"""What a finished run tells a person: the report's figures are test's with validation beside
them, and the model card lists both, the model's files and how to use it."""

from __future__ import annotations

import imgcls
from imgcls.config import TrainConfig

TINY = TrainConfig(backbone="test_efficientnet", pretrained=False, input_size=64)


def test_the_report_shows_test_with_val_beside_it_and_the_card_lists_both(image_folder, tmp_path):
    clf = imgcls.train(image_folder, tmp_path / "run", config=TINY)
    report = (tmp_path / "run" / "report.html").read_text()
    assert "the test split (val beside it in &#x27;Every split&#x27;)" in report  # HTML-escaped quotes
    card = (tmp_path / "run" / "README.md").read_text()
    for split in ("val", "test"):
        assert f"| {split} | {clf.metrics[split]['n']} | {clf.metrics[split]['accuracy']:.4f} |" in card
    assert f"Trained by imgcls {imgcls.__version__} on" in card
    assert "`model/model.onnx`" in card and f'imgcls.load("{tmp_path / "run"}")' in card


def test_without_a_test_split_the_report_shows_validation(tmp_path):
    from tests.conftest import write_class_folders

    write_class_folders(tmp_path / "data" / "train", per_class=6)
    write_class_folders(tmp_path / "data" / "val", per_class=2)
    imgcls.train(tmp_path / "data", tmp_path / "run", config=TINY.with_overrides({"onnx": False}))
    report = (tmp_path / "run" / "report.html").read_text()
    assert "the val split" in report and "the test split" not in report
    assert "| test |" not in (tmp_path / "run" / "README.md").read_text()
