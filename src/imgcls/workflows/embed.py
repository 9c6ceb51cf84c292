"""The workflow behind ``imgcls embed``: every image of a source to a feature vector on disk.

Recipe: read the source's records (labelled, or a plain folder of images) -> open the encoder
(a run's backbone or a pretrained one) -> embed the images a chunk at a time, each chunk
written as a part file beside the output -> merge the parts into the output file.

A part, once written, is never computed again: an interrupted run (even killed) resumes at
the first missing part. Features also go through the feature cache that ``train`` uses, so
embedding a data set a model was trained on costs almost nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgcls._files import write_json
from imgcls.config import DEFAULT_BACKBONE, EMBED_CHUNK_ROWS, ENGINES
from imgcls.data.embedding_files import (
    EmbeddingTable,
    format_of,
    read_embeddings,
    read_part,
    write_embeddings,
    write_part,
)
from imgcls.data.images import ImageRef
from imgcls.data.sources import open_source
from imgcls.data.sources.folders import expand_inputs
from imgcls.errors import ConfigError, DataError
from imgcls.inference.encoder import Encoder
from imgcls.inference.loading import open_encoder
from imgcls.models.features import Extraction, default_cache_dir
from imgcls.system.progress import Progress, takes_verbose

if TYPE_CHECKING:
    from imgcls.deploy.ray_engine import RayEmbedding

log = logging.getLogger(__name__)


@dataclass
class Embeddings:
    """The embedded images (``table``: vectors, ids, paths, labels, splits, metadata), the
    unreadable ones with their reasons, and the work done: rows this call embedded
    (``computed``) or took from an interrupted run's parts (``resumed``), and images it ran
    through the network (``forwarded``; the others came from the feature cache)."""

    table: EmbeddingTable
    unreadable: dict[str, str] = field(default_factory=dict)
    computed: int = 0
    resumed: int = 0
    forwarded: int = 0
    output: Path | None = None

    @property
    def vectors(self) -> np.ndarray:
        return self.table.vectors

    @property
    def ids(self) -> list[str]:
        return self.table.ids


@dataclass
class _Rows:
    """What to embed: each image's reference and its id, path, label and split."""

    refs: list[ImageRef]
    table: EmbeddingTable  # vectors empty: the columns only
    source: str


@takes_verbose
def embed(
    source: str | Path | Any,
    output: str | Path | None = None,
    *,
    model: str | Path = DEFAULT_BACKBONE,
    weights: str | Path | None = None,
    input_size: int | None = None,
    output_format: str = "auto",
    data_format: str = "auto",
    label_set: str = "fine",
    path_column: str = "path",
    label_column: str = "label",
    batch_size: int | None = None,
    workers: int | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    overwrite: bool = False,
    chunk_rows: int = EMBED_CHUNK_ROWS,
    engine: str = "local",
    ray_address: str | None = None,
    ray_actors: int | None = None,
    device: str = "auto",
    verbose: bool | None = None,
) -> Embeddings:
    """Embed every image of ``source`` with ``model``'s backbone.

    Args:
        source: any source ``train`` reads (labels and splits are kept where it has them), or
            a folder, file or glob of images without labels.
        output: a ``.parquet`` or ``.npy`` file to write (``None``: in memory only).
        model: a run directory (its fine-tuned backbone) or a backbone name (pretrained).
        weights: a local state dict for a backbone name.
        input_size: the input size for a backbone name (default: the backbone's own).
        output_format: ``parquet``, ``npy`` or ``auto`` (from ``output``'s suffix).
        data_format: how to read ``source`` (``auto``: detect it), as for ``train``.
        label_set: CIFAR-100's ``fine`` or ``coarse`` classes.
        path_column: a manifest's column of image paths.
        label_column: a manifest's column of labels.
        chunk_rows: images per part file (the resume granularity).
        device: where the network runs (``auto``: a GPU if there is one).
        engine: ``local``, or ``ray`` to embed on a Ray cluster (``ray_address``; ``ray_actors``
            copies of the network): the same rows, parts and resume.
        verbose: as for ``train``: bars and notes (``True``), warnings only (``False``).
    """
    if chunk_rows < 1:
        raise DataError(f"`chunk_rows` must be >= 1, got {chunk_rows}")
    if engine not in ENGINES:
        raise ConfigError(f"unknown `engine` {engine!r}; choose one of {', '.join(ENGINES)}")
    target = Path(output) if output is not None else None
    if target is not None:
        target = _check_output(target, output_format, overwrite=overwrite)
    rows = _read_rows(
        source,
        data_format=data_format,
        label_set=label_set,
        path_column=path_column,
        label_column=label_column,
    )
    encoder = open_encoder(model, weights=weights, input_size=input_size, device=device)
    cache = (Path(cache_dir) if cache_dir else default_cache_dir()) if use_cache else None
    job = _Job(encoder, rows, cache, batch_size, workers, chunk_rows)
    if engine == "ray":
        from imgcls.deploy.ray_engine import RayEmbedding

        job.ray = RayEmbedding(
            encoder,
            cache_dir=cache,
            address=ray_address,
            actors=ray_actors,
            batch_size=batch_size,
        )
    if target is None:
        tables = [table for _, table, _ in job.computed_chunks(list(range(job.chunks)))]
        if not job.dim:
            raise DataError(f"no readable image in {rows.source}; nothing to embed")
        table = EmbeddingTable.concatenate(tables, dim=job.dim)
        table.metadata = job.metadata()
        return Embeddings(table, job.unreadable, job.computed, 0, job.forwarded, None)
    return _embed_to_file(job, target)


def _check_output(target: Path, output_format: str, *, overwrite: bool) -> Path:
    if output_format != "auto" and target.suffix.lower() != f".{output_format}":
        target = target.with_name(target.name + f".{output_format}")
    format_of(target)
    if target.exists() and not overwrite:
        raise DataError(f"{target} already exists; choose another output or pass `overwrite=True`")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _read_rows(source: str | Path | Any, **source_options: str) -> _Rows:
    """A labelled source's records, or (for a folder, file or glob that is not one) its images."""
    data_format = source_options["data_format"]
    try:
        scan = open_source(source, **source_options, min_classes=1)
    except DataError as labelled_error:
        files = (
            expand_inputs([str(source)]) if data_format == "auto" and isinstance(source, str | Path) else []
        )
        if not files:
            raise labelled_error from None
        log.info("%s has no labels as a data source: embedding its %d image files", source, len(files))
        base = Path(source) if Path(source).is_dir() else None
        ids = [f.relative_to(base).as_posix() if base else str(f) for f in files]
        empty = np.zeros((len(files), 0), dtype=np.float32)
        return _Rows(list(files), EmbeddingTable(empty, ids, [str(f) for f in files]), str(source))
    refs = [scan.absolute(r) for r in scan.records]
    table = EmbeddingTable(
        np.zeros((len(refs), 0), dtype=np.float32),
        [r.path for r in scan.records],
        [str(ref) if isinstance(ref, Path) else None for ref in refs],
        [r.label for r in scan.records],
        [r.folder_split for r in scan.records],
    )
    return _Rows(refs, table, scan.location)


class _Job:
    """Embedding the rows a chunk at a time."""

    def __init__(
        self,
        encoder: Encoder,
        rows: _Rows,
        cache: Path | None,
        batch_size: int | None,
        workers: int | None,
        chunk_rows: int,
    ) -> None:
        self.encoder, self.rows, self.cache = encoder, rows, cache
        self.batch_size, self.workers, self.chunk_rows = batch_size, workers, chunk_rows
        self.chunks = max(1, -(-len(rows.refs) // chunk_rows))
        self.dim = 0
        self.unreadable: dict[str, str] = {}
        self.computed = 0
        self.forwarded = 0
        self.progress = Progress("embedding")
        self.ray: RayEmbedding | None = None  # set: the chunks are embedded on a Ray cluster

    def span(self, chunk: int) -> range:
        return range(chunk * self.chunk_rows, min((chunk + 1) * self.chunk_rows, len(self.rows.refs)))

    def computed_chunks(self, chunks: list[int]) -> Iterator[tuple[int, EmbeddingTable, dict[str, str]]]:
        """Embed ``chunks`` (ascending): each one's readable rows' table and unreadable rows' reasons."""
        if self.ray is None:
            for chunk in chunks:
                yield chunk, *self._compute(chunk)
            return
        # One stream for all of them: the actors load the network once. It comes back in
        # chunk-sized pieces, and every chunk but the data set's last is full.
        refs = [self.rows.refs[i] for chunk in chunks for i in self.span(chunk)]
        for chunk, extraction in zip(chunks, self.ray(refs, self.chunk_rows), strict=True):
            self.progress(self.span(chunk).stop, len(self.rows.refs))
            yield chunk, *self._finish(self.span(chunk), extraction)

    def _compute(self, chunk: int) -> tuple[EmbeddingTable, dict[str, str]]:
        span = self.span(chunk)
        total = len(self.rows.refs)
        extraction = self.encoder.embed_files(
            [self.rows.refs[i] for i in span],
            cache_dir=self.cache,
            batch_size=self.batch_size,
            workers=self.workers,
            progress=lambda done, _: self.progress(span.start + done, total),
        )
        return self._finish(span, extraction)

    def _finish(self, span: range, extraction: Extraction) -> tuple[EmbeddingTable, dict[str, str]]:
        failures = {self.rows.table.ids[span[i]]: reason for i, reason in extraction.failures.items()}
        for row_id, reason in failures.items():
            log.warning("skipped unreadable image %s: %s", row_id, reason)
        kept = [i for i, ok in zip(span, extraction.readable, strict=True) if ok]
        table = self._table(kept, extraction.features)
        self.note(table, failures)
        self.computed += len(kept) + len(failures)
        self.forwarded += extraction.computed
        return table, failures

    def note(self, table: EmbeddingTable, failures: dict[str, str]) -> None:
        if len(table):
            self.dim = int(table.vectors.shape[1])
        self.unreadable.update(failures)

    def _table(self, kept: list[int], vectors: np.ndarray) -> EmbeddingTable:
        columns = self.rows.table
        return EmbeddingTable(
            vectors.reshape(len(kept), -1).astype(np.float32, copy=False),
            [columns.ids[i] for i in kept],
            [columns.paths[i] for i in kept],
            [columns.labels[i] for i in kept],
            [columns.splits[i] for i in kept],
        )

    def plan(self) -> dict[str, Any]:
        """What the parts of an interrupted run must match to be reused."""
        ids = hashlib.blake2b("\n".join(self.rows.table.ids).encode(errors="surrogateescape"), digest_size=16)
        return {
            "feature_space": self.encoder.space(),
            "rows": len(self.rows.refs),
            "ids": ids.hexdigest(),
            "chunk_rows": self.chunk_rows,
        }

    def metadata(self) -> dict[str, Any]:
        return {
            **self.encoder.describe(),
            "source": self.rows.source,
            "dim": self.dim,
            "unreadable": self.unreadable,
        }


def _embed_to_file(job: _Job, target: Path) -> Embeddings:
    parts = target.with_name(f"{target.name}.parts")
    plan = job.plan()
    _reuse_or_clear(parts, plan)
    parts.mkdir(exist_ok=True)
    write_json(parts / "plan.json", plan)
    resumed, missing = 0, []
    for chunk in range(job.chunks):
        part = _part(parts, chunk)
        if part.is_file():
            try:
                table, failures = read_part(part)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("recomputing unreadable part %s (%s)", part, exc)
            else:
                job.note(table, failures)
                resumed += len(table) + len(failures)
                continue
        missing.append(chunk)
    for chunk, table, failures in job.computed_chunks(missing):
        write_part(_part(parts, chunk), table, unreadable=failures)
    if not job.dim:
        raise DataError(f"no readable image in {job.rows.source}; nothing to embed")
    if resumed:
        log.info("resumed %d rows from the parts of an interrupted run in %s", resumed, parts)
    rows = write_embeddings(target, _parts(parts, job.chunks), dim=job.dim, metadata=job.metadata())
    shutil.rmtree(parts, ignore_errors=True)
    log.debug("wrote %d embeddings (%d dimensions) to %s", rows, job.dim, target)
    return Embeddings(read_embeddings(target), job.unreadable, job.computed, resumed, job.forwarded, target)


def _part(parts: Path, chunk: int) -> Path:
    return parts / f"part-{chunk:06d}.npz"


def _parts(parts: Path, chunks: int) -> Iterator[EmbeddingTable]:
    for chunk in range(chunks):
        yield read_part(_part(parts, chunk))[0]


def _reuse_or_clear(parts: Path, plan: dict[str, Any]) -> None:
    """Keep the parts of an interrupted run of the same job; remove those of another."""
    if not parts.is_dir():
        return
    found: Any = None
    with contextlib.suppress(OSError, ValueError):
        found = json.loads((parts / "plan.json").read_text(encoding="utf-8"))
    if found == plan:
        return
    log.warning("%s holds parts of a different embedding run (other images or model); starting over", parts)
    shutil.rmtree(parts)
