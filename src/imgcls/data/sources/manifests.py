"""Data sets listed in a manifest: a CSV, JSON Lines or Parquet file (or, from Python, a pandas
DataFrame) with one row per image and the columns ``path``, ``label`` and optionally ``split``
(the first two may go by other names: ``ManifestColumns``, ``--path-column``/``--label-column``).

Paths are relative to the manifest's folder, and stay inside it unless the user trusts the
manifest (``--allow-outside-root``; absolute paths then too); ``split`` takes
``train``, ``val`` (or ``valid``, ``validation``) and ``test``, and an empty value leaves the
split to imgcls. Every listed file must exist: a manifest is a promise about the data.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from imgcls._files import read_csv
from imgcls.data.records import DatasetScan, ImageRecord, outside_root_allowed, path_in_root, validate_scan
from imgcls.data.sources.folders import SPLIT_FOLDERS
from imgcls.errors import DataError, first_line

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".parquet")
MANIFEST_LAYOUT = "rows of path,label[,split] in {root}"


@dataclass(frozen=True)
class ManifestColumns:
    """The names of a manifest's image-path and label columns (``filename,class`` in a file
    another tool wrote, say); ``split`` keeps its name."""

    path: str = "path"
    label: str = "label"

    def missing(self, header: Iterable[str]) -> list[str]:
        present = set(header)
        return [c for c in (self.path, self.label) if c not in present]

    def missing_error(self, name: str, header: Iterable[str]) -> DataError:
        header = list(header)
        missing = " or ".join(repr(c) for c in self.missing(header))
        return DataError(
            f"{name} has no {missing} column (found {', '.join(map(str, header)) or 'no columns'}); "
            f"a manifest needs path,label[,split] columns, or name yours with --path-column and "
            f"--label-column (in Python, path_column= and label_column=)"
        )


def read_manifest_source(
    source: str | Path | Any,
    *,
    min_classes: int = 2,
    allow_outside_root: bool | None = None,
    columns: ManifestColumns = ManifestColumns(),
) -> DatasetScan:
    """The data set a manifest file (or a pandas DataFrame) lists, its paths and labels in
    ``columns``.

    A manifest file's paths must stay inside its folder unless ``allow_outside_root`` (default:
    ``--allow-outside-root``, see ``outside_root_allowed``); a DataFrame's are the calling
    program's own and may name any file."""
    if _is_dataframe(source):
        rows = _dataframe_rows(source)
        return _scan(
            rows,
            root=Path.cwd(),
            name="the DataFrame",
            min_classes=min_classes,
            outside=True,
            columns=columns,
        )
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist")
    readers = {".csv": partial(_csv_rows, columns=columns), ".jsonl": _jsonl_rows, ".parquet": _parquet_rows}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path} is not a manifest: expected a {', '.join(MANIFEST_SUFFIXES)} file")
    outside = outside_root_allowed(allow_outside_root)
    return _scan(
        reader(path),
        root=path.parent,
        name=str(path),
        min_classes=min_classes,
        outside=outside,
        columns=columns,
    )


def _scan(
    rows: Iterable[tuple[int, Mapping[str, Any]]],
    *,
    root: Path,
    name: str,
    min_classes: int,
    outside: bool,
    columns: ManifestColumns,
) -> DatasetScan:
    scan = DatasetScan(root=root, classes=[], records=[], source=name, format="manifest")
    seen: dict[str, int] = {}
    for line, row in rows:
        record = _record(row, line=line, name=name, columns=columns)
        if record.path in seen:
            raise DataError(
                f"{name} line {line} lists {record.path} again (first on line {seen[record.path]})"
            )
        image = path_in_root(root, record.path, allowed=outside, where=f"{name} line {line}")
        if not image.is_file():
            problem = "is not a regular file" if image.exists() else "does not exist"
            raise DataError(f"{name} line {line}: image {record.path} {problem} (looked in {root})")
        seen[record.path] = line
        scan.records.append(record)
    scan.classes = sorted({r.label for r in scan.records})
    scan.folder_splits = {r.folder_split for r in scan.records if r.folder_split is not None}
    validate_scan(scan, min_classes=min_classes, expected=MANIFEST_LAYOUT)
    return scan


def _record(row: Mapping[str, Any], *, line: int, name: str, columns: ManifestColumns) -> ImageRecord:
    if columns.missing(row):
        raise columns.missing_error(name, row)
    path, label = _text(row[columns.path]), _text(row[columns.label])
    if not path or not label:
        raise DataError(f"{name} line {line}: empty {columns.path if not path else columns.label}")
    split_name = _text(row.get("split")).lower()
    if split_name and split_name not in SPLIT_FOLDERS:
        raise DataError(f"{name} line {line}: unknown split {split_name!r}; use train, val or test")
    return ImageRecord(path.replace("\\", "/"), label, SPLIT_FOLDERS[split_name] if split_name else None)


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):  # missing, or pandas' NaN
        return ""
    return str(value).strip()


def listed_path(file: Path, manifest: Path) -> str | None:
    """How a manifest at ``manifest`` lists ``file``: its path relative to the manifest's folder,
    or ``None`` for a file outside it, which only ``--allow-outside-root`` would read back."""
    folder = Path(os.path.abspath(manifest.parent))
    target = Path(os.path.abspath(file))
    return target.relative_to(folder).as_posix() if target.is_relative_to(folder) else None


def _csv_rows(path: Path, *, columns: ManifestColumns) -> Iterable[tuple[int, Mapping[str, Any]]]:
    try:
        # File names that are not valid UTF-8 come back as the bytes imgcls wrote for them.
        with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
            header, rows = read_csv(handle)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read manifest {path}: {exc}") from exc
    if not rows and columns.missing(header):
        raise columns.missing_error(str(path), header)
    return [(i + 2, {k.strip(): v for k, v in row.items() if k}) for i, row in enumerate(rows)]


def _jsonl_rows(path: Path) -> Iterable[tuple[int, Mapping[str, Any]]]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read manifest {path}: {exc}") from exc
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except ValueError as exc:
            raise DataError(f"{path} line {number} is not JSON: {exc}") from exc
        except RecursionError:
            raise DataError(f"{path} line {number} nests JSON too deeply to be a manifest row") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {number} is not a JSON object with path and label")
        rows.append((number, row))
    return rows


def _parquet_rows(path: Path) -> Iterable[tuple[int, Mapping[str, Any]]]:
    table = read_parquet(path)
    return [(i + 1, row) for i, row in enumerate(table.to_pylist())]


def open_parquet(path: Path) -> Any:
    """A Parquet file opened (its footer read, no rows yet); a damaged file, or no pyarrow, is a
    ``DataError`` that names it."""
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise DataError(f"reading {path} needs pyarrow: pip install 'imgcls[data]'") from None
    try:
        return pq.ParquetFile(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"cannot read Parquet file {path}: {first_line(exc)}") from None


def read_parquet(path: Path) -> Any:
    """A Parquet file's table, with ``open_parquet``'s errors."""
    handle = open_parquet(path)
    try:
        return handle.read()
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read Parquet file {path}: {first_line(exc)}") from None


def _is_dataframe(source: Any) -> bool:
    return hasattr(source, "to_dict") and hasattr(source, "columns") and not isinstance(source, str | Path)


def _dataframe_rows(frame: Any) -> Iterable[tuple[int, Mapping[str, Any]]]:
    return [(i + 1, row) for i, row in enumerate(frame.to_dict("records"))]
