"""Batch prediction over large folders: streaming, resumable, one output row per input file.

Files are scored in chunks and each chunk's rows are appended and flushed before the next is
read, so memory stays flat however many files there are and a killed run loses at most one
chunk. Rerunning with the same output skips every path already written. Works with any
predictor that has ``classes`` and ``score_paths`` (torch ``Classifier`` or ``OnnxClassifier``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from imgcls._files import CsvWriter, read_csv
from imgcls.config import TOP_K
from imgcls.errors import ConfigError
from imgcls.inference.predictions import PathScores, Predictor, rank_classes

log = logging.getLogger(__name__)

CHUNK = 512
CSV_FIELDS = ("path", "label", "index", "probability", "top_k", "error")


# Another engine's scoring of the files to predict (``deploy.ray_engine.RayScoring``): given the
# paths and a chunk size, each chunk's paths with their scores, in order.
ChunkScoring = Callable[[Sequence[Path], int], Iterator[tuple[Sequence[Path], PathScores]]]


@dataclass(frozen=True)
class BatchSummary:
    written: int
    skipped_existing: int
    unreadable: int
    seconds: float


def predict_to_file(
    predictor: Predictor,
    paths: Sequence[Path],
    output: Path,
    *,
    top_k: int = TOP_K,
    batch_size: int | None = None,
    workers: int | None = None,
    tta: bool = False,
    progress: Callable[[int, int], None] | None = None,
    engine: ChunkScoring | None = None,
) -> BatchSummary:
    """Append a row per path to ``output`` (``.csv`` or ``.jsonl``), skipping paths already there.
    ``engine`` scores the files elsewhere (a Ray cluster); by default ``predictor`` scores them here."""
    kind = _kind(output)
    _truncate_partial_line(output, kind)  # before reading: a torn row was never finished
    done = {_same_file_key(p) for p in already_written(output, kind)}
    todo = [p for p in paths if _same_file_key(p) not in done]
    started = time.perf_counter()
    written = unreadable = 0
    if engine is None:
        scored = (
            (chunk, predictor.score_paths(chunk, batch_size=batch_size, workers=workers, tta=tta))
            for chunk in _chunks(todo, CHUNK)
        )
    else:
        scored = engine(todo, CHUNK)
    with _open_for_append(output, kind) as (handle, write_row):
        for chunk, scores in scored:
            for row in _rows(chunk, scores, predictor.classes, top_k):
                write_row(row)
                unreadable += bool(row["error"])
            handle.flush()
            written += len(chunk)
            if progress is not None:
                progress(written, len(todo))
    return BatchSummary(written, len(paths) - len(todo), unreadable, time.perf_counter() - started)


def _same_file_key(path: str | Path) -> str:
    """One spelling per file: a rerun given absolute paths skips what a relative run wrote."""
    return os.path.abspath(str(path))


def _kind(output: Path) -> str:
    suffix = output.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise ConfigError(f"`output` must end in .csv or .jsonl, got {output.name}")
    return suffix[1:]


def already_written(output: Path, kind: str) -> set[str]:
    """Paths that a previous (possibly killed) run already wrote; a torn last line is ignored."""
    if not output.is_file():
        return set()
    with output.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
        if kind == "csv":
            return {
                row["path"] for row in read_csv(handle)[1] if row.get("path") and row.get("error") is not None
            }
        seen = set()
        for line in handle:
            try:
                seen.add(json.loads(line)["path"])
            except (ValueError, KeyError):
                continue  # the line a killed run was writing
        return seen


class _open_for_append:
    """Open ``output`` for appending; write the CSV header once."""

    def __init__(self, output: Path, kind: str) -> None:
        self.output, self.kind = output, kind
        self.handle: TextIO | None = None

    def __enter__(self) -> tuple[TextIO, Callable[[dict[str, Any]], None]]:
        new = not self.output.is_file() or self.output.stat().st_size == 0
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.output.open("a", encoding="utf-8", errors="surrogateescape", newline="")
        if self.kind == "jsonl":
            handle = self.handle
            return handle, lambda row: handle.write(json.dumps(_jsonl(row)) + "\n")
        writer = CsvWriter(self.handle)
        if new:
            writer.row(CSV_FIELDS)
        return self.handle, lambda row: writer.row(_csv(row)[field] for field in CSV_FIELDS)

    def __exit__(self, *exc: object) -> None:
        assert self.handle is not None
        self.handle.close()


def _truncate_partial_line(output: Path, kind: str) -> None:
    """Drop a last row that was never finished (what a kill in mid-write leaves)."""
    if not output.is_file() or output.stat().st_size == 0:
        return
    data = output.read_bytes()
    complete = _complete_length(data, quoted=kind == "csv")
    if complete < len(data):
        with output.open("r+b") as handle:
            handle.truncate(complete)


def _complete_length(data: bytes, *, quoted: bool) -> int:
    """The length of ``data``'s complete rows: up to its last newline, and for CSV, to the last
    newline outside a quoted field (a quoted path may hold a newline of its own)."""
    cut = data.rfind(b"\n") + 1
    if not quoted:
        return cut
    quotes = data.count(b'"', 0, cut)
    while quotes % 2 and cut > 0:
        previous = data.rfind(b"\n", 0, cut - 1) + 1
        quotes -= data.count(b'"', previous, cut)
        cut = previous
    return cut


def _chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _rows(paths: Sequence[Path], scores: PathScores, classes: list[str], k: int) -> Iterator[dict[str, Any]]:
    readable = [str(p) for p, ok in zip(paths, scores.readable, strict=True) if ok]
    ranked = iter(rank_classes(scores.probs, classes, readable, k))
    for i, path in enumerate(paths):
        if i in scores.failures:
            yield {"path": str(path), "predictions": [], "error": scores.failures[i]}
        else:
            yield {**next(ranked).to_dict(), "error": ""}


def _jsonl(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "error" or v}


def _csv(row: dict[str, Any]) -> dict[str, Any]:
    best = row["predictions"][0] if row["predictions"] else {"label": "", "index": "", "probability": ""}
    top = [[p["label"], round(p["probability"], 6)] for p in row["predictions"]]
    return {
        "path": row["path"],
        "label": best["label"],
        "index": best["index"],
        "probability": best["probability"],
        "top_k": json.dumps(top) if top else "",
        "error": row["error"],
    }
