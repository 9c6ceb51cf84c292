"""The workflow behind ``imgcls similar``: the nearest neighbours of query images in an
embedding file, by cosine similarity.

A query is a record id of the file (its stored vector is used) or an image file (embedded
with the encoder that wrote the file, rebuilt from the file's metadata).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.config import NEIGHBOURS
from imgcls.data.embedding_files import EmbeddingTable, read_embeddings
from imgcls.errors import DataError
from imgcls.evaluation.report import Card, write_gallery_page
from imgcls.inference.similarity import nearest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Neighbour:
    id: str
    path: str | None
    label: str | None
    similarity: float


@dataclass(frozen=True)
class Query:
    """One query (as given) and its neighbours, most similar first."""

    query: str
    path: str | None
    neighbours: tuple[Neighbour, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "neighbours": [vars(n) for n in self.neighbours],
        }


def similar(
    embeddings: str | Path | EmbeddingTable,
    queries: Sequence[str | Path],
    *,
    k: int = NEIGHBOURS,
    engine: str = "auto",
    html: str | Path | None = None,
) -> list[Query]:
    """The ``k`` nearest rows of ``embeddings`` (a file from ``imgcls embed``, or its table) to
    each query, the query's own row left out; ``html`` writes a page of thumbnails."""
    table = embeddings if isinstance(embeddings, EmbeddingTable) else read_embeddings(embeddings)
    if not queries:
        raise DataError("give at least one query: a record id of the embedding file or an image file")
    asked = [str(q) for q in queries]
    row_of = {row_id: i for i, row_id in enumerate(table.ids)}
    vectors, paths = _query_vectors(table, asked, row_of)
    own = _own_rows(table, asked, row_of)
    # One more than asked, as a query that is a row of the table finds itself first.
    sims, rows = nearest(vectors, table.vectors, k=min(k + 1, len(table.ids)), engine=engine)
    results = []
    for i, (query, path) in enumerate(zip(queries, paths, strict=True)):
        found = [(s, r) for s, r in zip(sims[i], rows[i], strict=True) if r != own[i]][:k]
        neighbours = tuple(
            Neighbour(table.ids[r], table.paths[r], table.labels[r], float(s)) for s, r in found
        )
        results.append(Query(str(query), path, neighbours))
    if html is not None:
        _write_page(Path(html), results)
    return results


def _own_rows(table: EmbeddingTable, queries: list[str], row_of: dict[str, int]) -> list[int]:
    """The table's row of each query (its record id, or the image file it was embedded from),
    -1 for a query from outside the table: a query is not its own neighbour."""
    row_of_file = {str(Path(p).resolve()): i for i, p in enumerate(table.paths) if p}
    return [row_of.get(q, row_of_file.get(str(Path(q).resolve()), -1)) for q in queries]


def _query_vectors(
    table: EmbeddingTable, queries: list[str], row_of: dict[str, int]
) -> tuple[np.ndarray, list[str | None]]:
    """Each query's vector: stored for a record id (its row in ``row_of``), computed for an image
    file."""
    files = [q for q in queries if q not in row_of]
    missing = [q for q in files if not Path(q).is_file()]
    if missing:
        raise DataError(
            f"query {missing[0]!r} is neither a record id of the embedding file nor an image file"
            + (f" ({len(missing) - 1} more like it)" if len(missing) > 1 else "")
        )
    computed = dict(zip(files, _embed_files(table, files), strict=True)) if files else {}
    vectors = np.stack([table.vectors[row_of[q]] if q in row_of else computed[q] for q in queries])
    paths = [table.paths[row_of[q]] if q in row_of else q for q in queries]
    return vectors, paths


def _embed_files(table: EmbeddingTable, files: list[str]) -> np.ndarray:
    """Embed query images with the encoder described in the file's metadata."""
    from imgcls.inference.loading import open_encoder

    described = table.metadata.get("encoder")
    if not described or not described.get("model"):
        raise DataError("the embedding file does not say which model wrote it; query by record id instead")
    encoder = open_encoder(**described)
    if encoder.space() != table.metadata.get("feature_space"):
        raise DataError(
            f"the model {described['model']} no longer computes the features of this embedding file "
            "(its weights or preprocessing changed); embed the data again"
        )
    return encoder.embed_images([Path(f) for f in files])


def _write_page(path: Path, results: list[Query]) -> None:
    sections = []
    for result in results:
        cards = [Card(_file(result.path), ("query", result.query))]
        cards += [
            Card(_file(n.path), (n.id, f"{n.label or ''} {n.similarity:.3f}".strip()))
            for n in result.neighbours
        ]
        sections.append((f"Nearest to {result.query}", cards))
    write_gallery_page(path, title="imgcls: nearest neighbours", sections=sections)
    log.debug("wrote %s", path)


def _file(path: str | None) -> Path | None:
    return Path(path) if path and Path(path).is_file() else None
