"""The run directory on disk: the name of every file imgcls writes, reading the model's and the
run's configs, and writing files so that a crash never leaves half of one. Imports no torch.

A run directory keeps its model in ``RUN_DIR/model/``; everything that takes a model path
accepts either. docs/run-directory.md describes each file.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

from imgcls.errors import DataError, ModelFormatError

# A saved model directory.
MODEL_SUBDIR = "model"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.torchscript.pt"
# Exports of an earlier model in the same directory would silently serve the old weights.
EXPORT_FILES = (ONNX_FILE, TORCHSCRIPT_FILE)
# A kNN head's training features and their classes, beside the weights rather than in them:
# memory-mapped when the model is opened, and model.safetensors keeps a size of its own.
KNN_BANK_FILE = "knn_bank.npy"
KNN_LABELS_FILE = "knn_labels.npy"
FORMAT_NAME = "imgcls-model"
FORMAT_VERSION = 1

# A training run's directory.
RUN_CONFIG_FILE = "run_config.json"
METRICS_FILE = "metrics.json"
SPLITS_FILE = "splits.csv"
SKIPPED_FILE = "skipped.csv"
REPORT_FILE = "report.html"
HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
MODEL_CARD_FILE = "README.md"
CHECKPOINT_FILE = "checkpoint.pt"

# A cross-validation or backbone-comparison directory.
CV_FILE = "cv.json"
CV_SPLITS_FILE = "cv_splits.csv"
COMPARE_FILE = "compare.json"


def model_dir(path: Path) -> Path:
    """``path/model`` for a run directory, else ``path`` itself."""
    return path / MODEL_SUBDIR if (path / MODEL_SUBDIR / CONFIG_FILE).is_file() else path


def weights_digest(directory: Path) -> str:
    """Content digest of a model directory's weights: ties an export to the weights it came from."""
    with (model_dir(directory) / WEIGHTS_FILE).open("rb") as handle:
        return hashlib.file_digest(handle, "blake2b").hexdigest()[:32]


def read_model_config(directory: Path) -> dict[str, Any]:
    """The validated ``config.json`` of a model directory."""
    config_path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise ModelFormatError(f"model directory {directory} does not exist")
    if not config_path.is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise ModelFormatError(
            f"{directory} is not an imgcls model directory: expected {CONFIG_FILE} and "
            f"{WEIGHTS_FILE} (a run directory keeps them in its {MODEL_SUBDIR}/ sub-folder)"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelFormatError(f"{config_path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ModelFormatError(f"{config_path} was not written by imgcls (format {found!r})")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFormatError(
            f"{directory} uses model format {config['format_version']}, newer than this imgcls "
            f"understands ({FORMAT_VERSION}); upgrade imgcls"
        )
    return config


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The ``run_config.json`` of a training run: its resolved settings, data folder and classes."""
    path = run_dir / RUN_CONFIG_FILE
    if not path.is_file():
        raise DataError(f"{run_dir} is not a run directory: it has no {RUN_CONFIG_FILE}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise DataError(f"{path} does not hold a run's settings")
    return config


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a hidden temporary file, then rename: readers never see half a file."""
    # File names that are not valid UTF-8 (surrogate escapes) are written back as their bytes.
    write_bytes_atomic(path, text.encode("utf-8", errors="surrogateescape"))


def write_bytes_atomic(path: Path, data: bytes | memoryview) -> None:
    """``write_text_atomic`` for bytes; the file's mode follows the umask, as ``open`` does.

    A failed write (a full disk, a read-only folder) leaves no temporary file behind, and its
    error names ``path`` (a failing ``write`` call names no file of its own)."""
    _write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_array_atomic(path: Path, array: np.ndarray) -> None:
    """``write_bytes_atomic`` for a ``.npy`` array, streamed: a memory-mapped array is copied
    to the file a page at a time, never whole into memory."""

    import numpy as np

    def save(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.save(handle, array, allow_pickle=False)

    _write_atomic(path, save)


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def write_csv_atomic(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
