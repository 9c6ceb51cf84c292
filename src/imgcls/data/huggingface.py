"""Hugging Face data sets: a folder written by ``save_to_disk`` (a ``Dataset`` or a
``DatasetDict`` of splits), or Parquet files with an image column and a label column, as the
Hub stores them (``train-00000-of-00001.parquet``).

The image column is the one of the ``Image`` feature (or a struct of ``bytes`` and ``path``);
the label column is the ``ClassLabel`` one, whose names name the classes (else ``label`` or
``labels``, as written). A split named ``train``, ``validation`` or ``test`` (or a Parquet file
named after one) holds that split. Images stay in memory as their encoded bytes. Reading a
``save_to_disk`` folder needs the optional ``datasets`` package, Parquet files ``pyarrow``
(``pip install 'imgcls[data]'``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from imgcls.data.folders import SPLIT_FOLDERS, split_word
from imgcls.data.images import MemoryImage
from imgcls.data.manifests import read_parquet
from imgcls.data.records import DatasetScan, ImageRecord, validate_scan
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


def read_hf_source(source: str | Path, *, min_classes: int = 2) -> DatasetScan:
    """A ``save_to_disk`` folder or image Parquet files, as records with in-memory images."""
    path = Path(source).expanduser()
    root = path if path.is_dir() else path.parent
    scan = DatasetScan(root=root, classes=[], records=[], source=str(path), format="huggingface")
    parts = _saved_parts(path) if looks_like_saved_dataset(path) else _parquet_parts(path)
    for split_name, rows, image_column, label_of in parts:
        split = SPLIT_FOLDERS.get(split_name.lower()) if split_name else None
        prefix = f"{split_name}/" if split_name else ""
        for index, row in enumerate(rows):
            record_id = f"{prefix}{index:06d}"
            scan.records.append(ImageRecord(record_id, label_of(row, record_id), split))
            scan.images[record_id] = MemoryImage(
                record_id, data=_image_bytes(row[image_column], path, record_id)
            )
    scan.classes = sorted({r.label for r in scan.records})
    scan.folder_splits = {r.folder_split for r in scan.records if r.folder_split}
    validate_scan(scan, min_classes=min_classes, expected="rows with an image and a label in {root}")
    return scan


def _saved_parts(path: Path) -> Iterable[tuple[str | None, Iterable[dict], str, Any]]:
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
        table = table.cast_column(image_column, datasets.Image(decode=False))
        yield split_name, table, image_column, _labeller(features, set(table.column_names), path)


def _feature_details(feature: Any) -> dict[str, Any]:
    names = getattr(feature, "names", None)
    return {"names": list(names)} if names is not None else {}


def _parquet_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix.lower() == ".parquet" else []
    return sorted(path.glob("*.parquet")) if path.is_dir() else []


def _parquet_parts(path: Path) -> Iterable[tuple[str | None, Iterable[dict], str, Any]]:
    files = _parquet_files(path)
    if not files:
        raise DataError(f"{path} holds no .parquet files")
    for file in files:
        table = read_parquet(file)
        features = _features(table.schema.metadata)
        image_column = _image_column(table.schema, features)
        if image_column is None:
            raise DataError(f"{file} has no image column (an Image feature, or a struct of bytes and path)")
        split_name = split_word(file.name)
        yield split_name, table.to_pylist(), image_column, _labeller(features, set(table.column_names), file)


def _features(metadata: dict[bytes, bytes] | None) -> dict[str, dict[str, Any]]:
    """The ``datasets`` features recorded in a Parquet schema's metadata, if any."""
    if not metadata or b"huggingface" not in metadata:
        return {}
    try:
        return dict(json.loads(metadata[b"huggingface"])["info"]["features"])
    except (ValueError, KeyError, TypeError):
        return {}


def _image_column(schema: Any, features: dict[str, dict[str, Any]]) -> str | None:
    marked = next((n for n, f in features.items() if isinstance(f, dict) and f.get("_type") == "Image"), None)
    if marked is not None:
        return marked
    for field in schema:
        names = {child.name for child in field.type} if hasattr(field.type, "num_fields") else set()
        if {"bytes", "path"} <= names:
            return field.name
    return None


def _labeller(features: dict[str, dict[str, Any]], columns: set[str], source: Path) -> Any:
    """``row, record id -> class name``, from the ClassLabel column or a label column."""
    column = next(
        (n for n, f in features.items() if isinstance(f, dict) and f.get("_type") == "ClassLabel"), None
    )
    column = column or next((n for n in LABEL_NAMES if n in columns), None)
    if column is None:
        raise DataError(f"{source} has no label column (a ClassLabel feature, or one named label or labels)")
    names = list(features.get(column, {}).get("names") or [])

    def label_of(row: dict, record_id: str) -> str:
        value = row[column]
        if value is None or value == -1:
            raise DataError(f"{source}: row {record_id} has no label")
        if isinstance(value, int) and 0 <= value < len(names):
            return str(names[value])
        return str(value)

    return label_of


def _image_bytes(value: Any, source: Path, record_id: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        if value.get("path") and Path(value["path"]).is_file():
            return Path(value["path"]).read_bytes()
    raise DataError(f"{source}: row {record_id} has no image bytes")
