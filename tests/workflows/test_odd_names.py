"""File names that are not valid UTF-8 are kept losslessly through train, reruns and batch prediction."""

from __future__ import annotations

import os
from pathlib import Path

from imgcls.cli.main import main
from imgcls.data.splits import read_manifest
from tests.conftest import COLOURS, TINY_ARGS, make_image, run_cli, write_class_folders

ODD = os.fsdecode(b"caf\xe9-\xff.png")  # Latin-1 bytes in a name: not UTF-8


def _folder(root: Path) -> tuple[Path, Path]:
    data = write_class_folders(root / "data", per_class=6)
    odd = data / "red" / ODD
    make_image(COLOURS["red"], seed=77).save(odd, "PNG")
    return data, odd


def test_train_reruns_and_batch_prediction_keep_a_non_utf8_name(tmp_path):
    data, odd = _folder(tmp_path)
    run = tmp_path / "run"
    for extra in ([], ["--overwrite"]):  # the rerun reads what the first run wrote
        assert main(["train", str(data), "--output", str(run), *TINY_ARGS, *extra]) == 0
    assert f"red/{ODD}" in read_manifest(run / "splits.csv")
    output = tmp_path / "predictions.csv"
    for _ in range(2):  # the second run resumes from the file the first one wrote
        assert main(["predict", str(run), str(data / "red"), "--output", str(output)]) == 0
    rows = output.read_bytes().splitlines()
    assert len(rows) == 8 and sum(os.fsencode(str(odd)) in row for row in rows) == 1
    printed = run_cli("predict", str(run), str(odd)).stdout  # a real console stream, not capsys's
    assert "caf\\udce9-\\udcff.png" in printed


def test_predict_exits_non_zero_when_no_input_could_be_read(tmp_path):
    data, _ = _folder(tmp_path)
    run = tmp_path / "run"
    assert main(["train", str(data), "--output", str(run), *TINY_ARGS]) == 0
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    assert main(["predict", str(run), str(broken)]) == 1
    assert main(["predict", str(run), str(broken), "--output", str(tmp_path / "p.csv")]) == 1
    assert main(["predict", str(run), str(broken), str(data / "red")]) == 0  # some were read
