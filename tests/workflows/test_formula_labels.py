"""Class labels that a spreadsheet would run as formulas, through every CSV imgcls writes: the
run's splits, batch predictions, doctor's issues and clean manifest. No cell begins a formula,
and what imgcls reads back is the label as given."""

from __future__ import annotations

import ast
import csv
from pathlib import Path

from imgcls._files import FORMULA_STARTS, csv_text
from imgcls.cli.main import main
from imgcls.data.sources import open_source
from tests import bad_sources as bad
from tests.conftest import TINY_ARGS, TINY_BACKBONE

LABELS = bad.FORMULA_LABELS[:4]
SRC = Path(__file__).resolve().parents[2] / "src" / "imgcls"


def _cells(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [cell for row in csv.reader(handle) for cell in row]


def test_no_csv_imgcls_writes_holds_a_formula_and_each_reads_back(tmp_path):
    manifest = bad.labelled_manifest(tmp_path / "in", LABELS, per_label=5)
    (tmp_path / "in" / "images" / "copy.png").write_bytes(
        (tmp_path / "in" / "images" / "0_0.png").read_bytes()
    )
    with manifest.open("a", encoding="utf-8") as handle:
        handle.write(f'images/copy.png,"{LABELS[1]}"\n')  # a copy under another label: an issue row
    run, predictions = tmp_path / "run", tmp_path / "predictions.csv"
    assert main(["train", str(manifest), "-o", str(run), *TINY_ARGS, "--workers", "0"]) == 0
    assert main(["predict", str(run), str(tmp_path / "in" / "images"), "--output", str(predictions)]) == 0
    doctor_args = ["--backbone", TINY_BACKBONE, "--no-pretrained"]
    clean = tmp_path / "in" / "clean.csv"
    assert (
        main(
            [
                "doctor",
                str(manifest),
                "-o",
                str(tmp_path / "doctor"),
                "--write-clean",
                str(clean),
                *doctor_args,
            ]
        )
        == 0
    )

    written = [run / "splits.csv", predictions, tmp_path / "doctor" / "issues.csv", clean]
    for path in written:
        formulas = [cell for cell in _cells(path) if cell.startswith(FORMULA_STARTS)]
        assert not formulas, f"{path.name}: {formulas}"
    with predictions.open(newline="", encoding="utf-8") as handle:
        predicted = {csv_text(row["label"]) for row in csv.DictReader(handle)}
    assert predicted <= set(LABELS) and predicted
    issues = {csv_text(cell) for cell in _cells(tmp_path / "doctor" / "issues.csv")}
    assert any(label in cell for cell in issues for label in LABELS)
    assert set(open_source(clean).classes) == set(LABELS)  # the clean manifest trains as written


def test_every_csv_in_the_source_is_written_through_the_one_writer():
    """``csv.writer`` and ``csv.DictWriter`` appear only in _files.py, whose writer neutralises."""
    for path in SRC.rglob("*.py"):
        if path.name == "_files.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        used = {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "csv"
        }
        assert not used & {"writer", "DictWriter"}, f"{path} writes CSV around CsvWriter"
