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
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

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
    if directory.is_file():
        raise ModelFormatError(
            f"{directory} is a file; a model is the directory that holds {CONFIG_FILE} and "
            f"{WEIGHTS_FILE} (RUN_DIR or RUN_DIR/{MODEL_SUBDIR})"
        )
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


# Names that come from data (class labels, record ids) become file or folder names with what no
# file system takes in a name replaced by "_": path separators, Windows' forbidden characters
# and control characters. Letters of every script (their combining marks included) and spaces
# stay, so distinct labels stay distinct.
_FORBIDDEN_IN_NAME = set('/\\:*?"<>|')
# Names Windows reserves in every folder, whatever the extension (superscript digits included).
_RESERVED_NAMES = {
    "con", "prn", "aux", "nul",
    *(f"{port}{n}" for port in ("com", "lpt") for n in (*"0123456789", "\u00b9", "\u00b2", "\u00b3")),
}  # fmt: skip
# Well under every file system's 255-byte limit, leaving room for a suffix and an extension.
NAME_BYTES = 200


def path_component(name: str) -> str:
    """``name`` as one file or folder name that stays inside the folder it is joined to: no
    separators or forbidden characters, no leading or trailing dots or spaces (so never ``.``,
    ``..`` or hidden), no reserved device names, at most ``NAME_BYTES`` bytes, never empty."""
    text = "".join(
        "_" if c in _FORBIDDEN_IN_NAME or unicodedata.category(c)[0] == "C" else c
        for c in unicodedata.normalize("NFC", name)
    )
    text = text.encode("utf-8", errors="replace")[:NAME_BYTES].decode("utf-8", errors="ignore")
    text = text.strip(". ")
    if not text:
        return "_"
    return f"_{text}" if text.split(".")[0].strip().lower() in _RESERVED_NAMES else text


class NameAllocator:
    """Distinct names in one folder for distinct data names: ``path_component`` of each, with
    ``-2``, ``-3``... where that is taken (compared as a case-insensitive file system compares).
    ``__call__`` gives a name asked again the name it gave (a class label, once per image);
    ``unique`` a new name every time (a file). Every name written otherwise than given is
    recorded in ``changed``, and those that needed a number, because another name came out the
    same, also in ``collided``."""

    def __init__(self) -> None:
        self._given: dict[tuple[str, str], str] = {}
        self._taken: set[str] = set()
        self.changed: list[tuple[str, str]] = []
        self.collided: list[tuple[str, str]] = []

    def __call__(self, name: str, suffix: str = "") -> str:
        if (name, suffix) not in self._given:
            self._given[(name, suffix)] = self.unique(name, suffix)
        return self._given[(name, suffix)]

    def unique(self, name: str, suffix: str = "") -> str:
        base = path_component(name)
        candidate, number = base + suffix, 1
        while candidate.casefold() in self._taken:
            number += 1
            candidate = f"{base}-{number}{suffix}"
        self._taken.add(candidate.casefold())
        if candidate != name + suffix:
            self.changed.append((name, candidate))
        if number > 1:
            self.collided.append((name, candidate))
        return candidate


# A spreadsheet runs a cell that begins with one of these as a formula (OWASP's CSV injection
# list). Such a text cell is written with a leading apostrophe, which spreadsheets show as text;
# a cell that already begins with an apostrophe before one of them, or before another
# apostrophe, gets one more, so ``csv_text`` undoes exactly what ``csv_cell`` did.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_ESCAPE = "'"


def csv_cell(value: Any) -> Any:
    """``value`` as a CSV cell that no spreadsheet runs: numbers as they are, text neutralised."""
    if not isinstance(value, str) or not value:
        return value
    if value.startswith(FORMULA_STARTS) or (value[0] == _ESCAPE and value[1:2] in (*FORMULA_STARTS, _ESCAPE)):
        return _ESCAPE + value
    return value


def csv_text(cell: str) -> str:
    """The text ``csv_cell`` wrote as ``cell``: every CSV imgcls reads goes through this."""
    if cell.startswith(_ESCAPE) and cell[1:2] in (*FORMULA_STARTS, _ESCAPE):
        return cell[1:]
    return cell


class CsvWriter:
    """The one way imgcls writes CSV rows: every cell through ``csv_cell``."""

    def __init__(self, handle: TextIO) -> None:
        self._writer = csv.writer(handle)

    def row(self, values: Iterable[Any]) -> None:
        self._writer.writerow([csv_cell(value) for value in values])


def read_csv(handle: TextIO) -> tuple[list[str], list[dict[str, str]]]:
    """A CSV's header and rows, each cell as ``csv_text`` reads it; cells beyond the header are
    dropped and a short row's missing cells are ``None``, as ``csv.DictReader`` gives them."""
    reader = csv.DictReader(handle)
    rows = [
        {
            key: csv_text(value) if isinstance(value, str) else value
            for key, value in row.items()
            if key is not None
        }
        for row in reader
    ]
    return list(reader.fieldnames or []), rows


def write_csv_atomic(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    writer = CsvWriter(buffer)
    writer.row(header)
    for row in rows:
        writer.row(row)
    write_text_atomic(path, buffer.getvalue())
