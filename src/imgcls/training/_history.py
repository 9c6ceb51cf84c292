"""A fine-tuning run's epoch history on disk: ``history.csv`` and ``curves.png``."""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

from imgcls._files import CURVES_FILE, HISTORY_FILE, write_bytes_atomic, write_csv_atomic
from imgcls.evaluation.report import training_curves_png
from imgcls.training._loop import EpochRecord


def write_history(run_dir: Path, history: list[EpochRecord]) -> None:
    names = [f.name for f in fields(EpochRecord)]
    rows = [["" if (v := getattr(r, n)) is None else v for n in names] for r in history]
    write_csv_atomic(run_dir / HISTORY_FILE, names, rows)
    write_bytes_atomic(run_dir / CURVES_FILE, training_curves_png([asdict(r) for r in history]))
