"""Embedding files: one row per image (id, path, label, split) and its feature vector.

Two formats, chosen by the file's suffix:

- ``.parquet``: columns ``id``, ``path``, ``label``, ``split`` (strings, null where unknown)
  and ``embedding`` (a fixed-size list of float32); what produced the vectors is JSON in
  the file's metadata under ``imgcls``. Needs pyarrow (the ``data`` extra).
- ``.npy``: the vectors as a float32 matrix that ``numpy.load`` reads, beside a JSON file of
  the same stem (``embeddings.json``) holding the rows and the metadata.

Files are written whole to a temporary name and renamed, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgcls._files import write_json
from imgcls.errors import DataError

FORMATS = ("parquet", "npy")
METADATA_KEY = b"imgcls"
COLUMNS = ("id", "path", "label", "split")


@dataclass
class EmbeddingTable:
    """Vectors (rows x dim, float32) and, per row, the record id, path, label and split."""

    vectors: np.ndarray
    ids: list[str]
    paths: list[str | None] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)
    splits: list[str | None] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ids)
        self.paths = self.paths or [None] * n
        self.labels = self.labels or [None] * n
        self.splits = self.splits or [None] * n
        if not len(self.vectors) == len(self.paths) == len(self.labels) == len(self.splits) == n:
            raise ValueError("an embedding table needs one id, path, label and split per vector")

    def __len__(self) -> int:
        return len(self.ids)

    def column(self, name: str) -> list[str | None]:
        return {"id": list(self.ids), "path": self.paths, "label": self.labels, "split": self.splits}[name]

    @staticmethod
    def concatenate(tables: Sequence[EmbeddingTable], *, dim: int) -> EmbeddingTable:
        vectors = [t.vectors for t in tables if len(t)]
        return EmbeddingTable(
            np.concatenate(vectors) if vectors else np.zeros((0, dim), dtype=np.float32),
            [i for t in tables for i in t.ids],
            [p for t in tables for p in t.paths],
            [x for t in tables for x in t.labels],
            [s for t in tables for s in t.splits],
        )


def format_of(path: Path, output_format: str = "auto") -> str:
    """``parquet`` or ``npy``: named, or from ``path``'s suffix."""
    if output_format != "auto":
        if output_format not in FORMATS:
            raise DataError(f"unknown embedding format {output_format!r}; choose one of {', '.join(FORMATS)}")
        return output_format
    suffix = path.suffix.lower().lstrip(".")
    if suffix in FORMATS:
        return suffix
    raise DataError(f"cannot tell the format of {path} from its suffix; name it .parquet or .npy")


def sidecar(path: Path) -> Path:
    """The JSON file beside an ``.npy`` embedding file."""
    return path.with_suffix(".json")


def write_embeddings(
    path: Path, tables: Iterable[EmbeddingTable], *, dim: int, metadata: dict[str, Any]
) -> int:
    """Write the rows of ``tables`` (read one at a time: a large file never sits in memory
    whole) to ``path`` in its format; the number of rows written."""
    if format_of(path) == "npy":
        return _write_npy(path, list(tables), dim=dim, metadata=metadata)
    return _write_parquet(path, tables, dim=dim, metadata=metadata)


def read_embeddings(path: str | Path) -> EmbeddingTable:
    """An embedding file written by ``write_embeddings`` (or ``imgcls embed``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"embedding file {path} does not exist")
    try:
        if format_of(path) == "npy":
            return _read_npy(path)
        return _read_parquet(path)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path} is not a readable embedding file ({type(exc).__name__}: {exc})") from None


def write_part(path: Path, table: EmbeddingTable, *, unreadable: dict[str, str]) -> None:
    """One resumable part of a larger file: the rows and the part's unreadable images."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        np.savez(
            handle,
            vectors=table.vectors.astype(np.float32),
            rows=np.array(json.dumps({**{c: table.column(c) for c in COLUMNS}, "unreadable": unreadable})),
        )
    os.replace(tmp, path)


def read_part(path: Path) -> tuple[EmbeddingTable, dict[str, str]]:
    with np.load(path, allow_pickle=False) as data:
        vectors, rows = data["vectors"], json.loads(str(data["rows"]))
    return _table(vectors, rows, {}), rows["unreadable"]


def _write_parquet(
    path: Path, tables: Iterable[EmbeddingTable], *, dim: int, metadata: dict[str, Any]
) -> int:
    pa, pq = _pyarrow()
    schema = pa.schema(
        [*(pa.field(c, pa.string()) for c in COLUMNS), pa.field("embedding", pa.list_(pa.float32(), dim))],
        metadata={METADATA_KEY: json.dumps(metadata).encode()},
    )
    tmp = path.with_name(f".{path.name}.tmp")
    rows = 0
    with pq.ParquetWriter(str(tmp), schema) as writer:
        for table in tables:
            flat = pa.array(np.ascontiguousarray(table.vectors, dtype=np.float32).ravel())
            columns = [pa.array(table.column(c), pa.string()) for c in COLUMNS]
            embedding = pa.FixedSizeListArray.from_arrays(flat, dim)
            writer.write_table(pa.Table.from_arrays([*columns, embedding], schema=schema))
            rows += len(table)
    os.replace(tmp, path)
    return rows


def _read_parquet(path: Path) -> EmbeddingTable:
    _, pq = _pyarrow()
    table = pq.read_table(str(path))
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None or "embedding" not in table.column_names:
        raise ValueError("no embedding column or imgcls metadata: not written by imgcls embed")
    embedding = table.column("embedding").combine_chunks()
    dim = embedding.type.list_size
    vectors = embedding.values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)
    columns = {c: table.column(c).to_pylist() for c in COLUMNS}
    return _table(vectors, columns, json.loads(raw))


def _write_npy(path: Path, tables: list[EmbeddingTable], *, dim: int, metadata: dict[str, Any]) -> int:
    rows = sum(len(t) for t in tables)
    tmp = path.with_name(f".{path.stem}.tmp.npy")
    matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, dim))
    start = 0
    for table in tables:
        matrix[start : start + len(table)] = table.vectors
        start += len(table)
    matrix.flush()
    del matrix
    columns = {c: [x for t in tables for x in t.column(c)] for c in COLUMNS}
    write_json(sidecar(path), {"metadata": metadata, "rows": columns})
    os.replace(tmp, path)
    return rows


def _read_npy(path: Path) -> EmbeddingTable:
    side = sidecar(path)
    if not side.is_file():
        raise DataError(f"{path} has no {side.name} beside it: the rows and metadata of the vectors")
    described = json.loads(side.read_text(encoding="utf-8"))
    vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    return _table(vectors, described["rows"], described["metadata"])


def _table(vectors: np.ndarray, columns: dict[str, list], metadata: dict[str, Any]) -> EmbeddingTable:
    return EmbeddingTable(
        vectors, columns["id"], columns["path"], columns["label"], columns["split"], metadata
    )


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            "Parquet embedding files need pyarrow: pip install 'imgcls[data]', or write .npy"
        ) from None
    return pa, pq
