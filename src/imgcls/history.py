"""A fine-tuning run's epoch history on disk: ``history.csv`` and ``curves.png``."""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

from imgcls.model_io import write_csv_atomic
from imgcls.report import training_curves_png
from imgcls.trainloop import EpochRecord

HISTORY_NAME = "history.csv"
CURVES_NAME = "curves.png"


def write_history(run_dir: Path, history: list[EpochRecord]) -> None:
    names = [f.name for f in fields(EpochRecord)]
    rows = [["" if (v := getattr(r, n)) is None else v for n in names] for r in history]
    write_csv_atomic(run_dir / HISTORY_NAME, names, rows)
    tmp = run_dir / f".{CURVES_NAME}.tmp"
    tmp.write_bytes(training_curves_png([asdict(r) for r in history]))
    tmp.replace(run_dir / CURVES_NAME)
