"""Hugging Face data sets: a folder written by ``save_to_disk`` (a ``Dataset`` or a
``DatasetDict`` of splits), or Parquet files with an image column and a label column, as the
Hub stores them (``train-00000-of-00001.parquet``).

The image column is the one of the ``Image`` feature (or a struct of ``bytes`` and ``path``);
the label column is the ``ClassLabel`` one, whose names name the classes (else ``label`` or
``labels``, as written). A split named ``train``, ``validation`` or ``test`` (or a Parquet file
named after one) holds that split. Only the labels are read when the data set is scanned; an
image's bytes are read when the image is (a Parquet file's row group at a time, kept per
process for the next images; a saved data set's memory-mapped Arrow table, opened once per
process), so a data set of any size costs memory per record, not per byte. Reading a
``save_to_disk`` folder needs the optional ``datasets`` package, Parquet files ``pyarrow``
(``pip install 'imgcls[data]'``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgcls.data.images import MemoryImage, StoredImage
from imgcls.data.records import DatasetScan, ImageRecord, outside_root_allowed, path_in_root, validate_scan
from imgcls.data.sources.folders import SPLIT_FOLDERS, split_word
from imgcls.data.sources.manifests import open_parquet
from imgcls.errors import DataError, first_line

LABEL_NAMES = ("label", "labels")


def looks_like_saved_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def looks_like_image_parquet(path: Path) -> bool:
    """A Parquet file (or a folder of them) whose table has an image column and no ``path``."""
    files = _parquet_files(path)
    if not files:
        return False
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        return False
    try:
        schema = pq.read_schema(files[0])
    except (OSError, ValueError):  # not Parquet after all: the reader that takes it says why
        return False
    return "path" not in schema.names and _image_column(schema, _features(schema.metadata)) is not None


def read_hf_source(
    source: str | Path, *, min_classes: int = 2, allow_outside_root: bool | None = None
) -> DatasetScan:
    """A ``save_to_disk`` folder or image Parquet files, as records whose images are read on
    demand. An image stored as a path (no bytes) must lie in the data set's folder unless
    ``allow_outside_root`` (default: ``--allow-outside-root``, see ``outside_root_allowed``)."""
    outside = outside_root_allowed(allow_outside_root)
    path = Path(source).expanduser()
    root = path if path.is_dir() else path.parent
    scan = DatasetScan(root=root, classes=[], records=[], source=str(path), format="huggingface")
    parts = _saved_parts(path, outside) if looks_like_saved_dataset(path) else _parquet_parts(path, outside)
    for split_name, labels, cells, label_of in parts:
        split = SPLIT_FOLDERS.get(split_name.lower()) if split_name else None
        prefix = f"{split_name}/" if split_name else ""
        for index, (label, cell) in enumerate(zip(labels, cells, strict=True)):
            record_id = f"{prefix}{index:06d}"
            scan.records.append(ImageRecord(record_id, label_of(label, record_id), split))
            scan.images[record_id] = MemoryImage(record_id, member=cell)
    scan.classes = sorted({r.label for r in scan.records})
    scan.folder_splits = {r.folder_split for r in scan.records if r.folder_split}
    validate_scan(scan, min_classes=min_classes, expected="rows with an image and a label in {root}")
    return scan


# One part of a source: its split name, its labels as stored, where each image is, and how a
# stored label becomes a class name.
_Part = tuple[str | None, list[Any], Iterable[StoredImage], Callable[[Any, str], str]]


@dataclass(frozen=True)
class SavedCell:
    """An image of a ``save_to_disk`` data set: row ``row`` of ``split``'s image column."""

    folder: Path
    split: str | None
    row: int
    column: str
    outside_root: bool = False  # whether the cell may name a file outside ``folder``

    @property
    def where(self) -> str:
        return f"{self.folder}" + (f"/{self.split}" if self.split else "")

    def read(self) -> bytes:
        value = _saved_table(self.folder, self.split, self.column)[self.row][self.column]
        return _stored_bytes(
            value, self.folder, outside_root=self.outside_root, where=f"{self.where} row {self.row}"
        )


@dataclass(frozen=True)
class ParquetCell:
    """An image of a Parquet file: row ``row`` of row group ``group``'s image column."""

    file: Path
    group: int
    row: int
    column: str
    outside_root: bool = False  # whether the cell may name a file outside the file's folder

    @property
    def where(self) -> str:
        return f"{self.file}, row group {self.group}"

    def read(self) -> bytes:
        try:
            values = _row_group(self.file, _version(self.file), self.group, self.column)
        except ValueError as exc:  # pyarrow's ArrowInvalid
            raise OSError(first_line(exc)) from None
        where = f"{self.where} row {self.row}"
        return _stored_bytes(values[self.row], self.file.parent, outside_root=self.outside_root, where=where)


@functools.lru_cache(maxsize=4)
def _saved_table(folder: Path, split: str | None, column: str) -> Any:
    """The split's table, memory-mapped, its image column left encoded (once per process)."""
    import datasets

    loaded = datasets.load_from_disk(str(folder))
    table = loaded[split] if split is not None else loaded
    return table.cast_column(column, datasets.Image(decode=False))


def _version(file: Path) -> tuple[int, int]:
    """What tells a rewritten file from the one cached: a long-lived process (a notebook, the
    server) must not read old images from a file written again under the same name."""
    found = file.stat()
    return found.st_mtime_ns, found.st_size


@functools.lru_cache(maxsize=4)
def _row_group(file: Path, version: tuple[int, int], group: int, column: str) -> list[Any]:
    """One row group's image column: read once for the images that follow it."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(file).read_row_group(group, columns=[column]).column(0).to_pylist()


def _saved_parts(path: Path, outside_root: bool) -> Iterable[_Part]:
    try:
        import datasets
    except ModuleNotFoundError:
        raise DataError(f"reading {path} needs the datasets package: pip install 'imgcls[data]'") from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises many kinds for a damaged folder
        raise DataError(f"cannot read the Hugging Face data set {path}: {first_line(exc)}") from None
    parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
    for split_name, table in parts:
        features = {
            name: {"_type": type(f).__name__, **_feature_details(f)} for name, f in table.features.items()
        }
        image_column = next((n for n, f in features.items() if f["_type"] == "Image"), None)
        if image_column is None:
            raise DataError(f"{path}{'/' + split_name if split_name else ''} has no Image column")
        column, label_of = _labeller(features, set(table.column_names), path)
        cells = (SavedCell(path, split_name, row, image_column, outside_root) for row in range(len(table)))
        yield split_name, list(table[column]), cells, label_of


def _feature_details(feature: Any) -> dict[str, Any]:
    names = getattr(feature, "names", None)
    return {"names": list(names)} if names is not None else {}


def _parquet_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix.lower() == ".parquet" else []
    return sorted(path.glob("*.parquet")) if path.is_dir() else []


def _parquet_parts(path: Path, outside_root: bool) -> Iterable[_Part]:
    files = _parquet_files(path)
    if not files:
        raise DataError(f"{path} holds no .parquet files")
    for file in files:
        handle = open_parquet(file)
        schema = handle.schema_arrow
        features = _features(schema.metadata)
        image_column = _image_column(schema, features)
        if image_column is None:
            raise DataError(f"{file} has no image column (an Image feature, or a struct of bytes and path)")
        column, label_of = _labeller(features, set(schema.names), file)
        try:
            labels = handle.read(columns=[column]).column(0).to_pylist()
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read Parquet file {file}: {first_line(exc)}") from None
        sizes = [handle.metadata.row_group(group).num_rows for group in range(handle.num_row_groups)]
        cells = (
            ParquetCell(file, group, row, image_column, outside_root)
            for group, size in enumerate(sizes)
            for row in range(size)
        )
        yield split_word(file.name), labels, cells, label_of


def _features(metadata: dict[bytes, bytes] | None) -> dict[str, dict[str, Any]]:
    """The ``datasets`` features recorded in a Parquet schema's metadata, if any."""
    if not metadata or b"huggingface" not in metadata:
        return {}
    try:
        return dict(json.loads(metadata[b"huggingface"])["info"]["features"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return {}


def _image_column(schema: Any, features: dict[str, dict[str, Any]]) -> str | None:
    """The column the features mark as an Image (if the table has it), else the first struct of
    ``bytes`` and ``path``."""
    marked = next((n for n, f in features.items() if isinstance(f, dict) and f.get("_type") == "Image"), None)
    if marked is not None and marked in schema.names:
        return marked
    for field in schema:
        kind = field.type  # a struct's children by index: other types with num_fields do not iterate
        names = {kind.field(i).name for i in range(getattr(kind, "num_fields", 0))}
        if {"bytes", "path"} <= names:
            return field.name
    return None


def _labeller(
    features: dict[str, dict[str, Any]], columns: set[str], source: Path
) -> tuple[str, Callable[[Any, str], str]]:
    """The label column (the ClassLabel one, else one named ``label`` or ``labels``) and
    ``stored label, record id -> class name``."""
    column = next(
        (n for n, f in features.items() if isinstance(f, dict) and f.get("_type") == "ClassLabel"), None
    )
    column = column or next((n for n in LABEL_NAMES if n in columns), None)
    if column is None:
        raise DataError(f"{source} has no label column (a ClassLabel feature, or one named label or labels)")
    names = list(features.get(column, {}).get("names") or [])

    def label_of(value: Any, record_id: str) -> str:
        if value is None or value == -1:
            raise DataError(f"{source}: row {record_id} has no label")
        if isinstance(value, int) and 0 <= value < len(names):
            return str(names[value])
        return str(value)

    return column, label_of


def _stored_bytes(value: Any, root: Path, *, outside_root: bool, where: str) -> bytes:
    """An image cell's encoded file: its bytes, or the file its path names, which must lie in
    the data set's folder ``root`` unless ``outside_root`` (``path_in_root``)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        if isinstance(value.get("path"), str) and value["path"]:
            try:
                file = path_in_root(root, value["path"], allowed=outside_root, where=where)
            except DataError as exc:
                raise OSError(str(exc)) from None
            if file.is_file():
                return file.read_bytes()
    raise OSError("the row has no image bytes")
