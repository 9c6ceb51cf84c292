"""The feature cache on disk, and the feature matrices assembled from it.

A cache entry is a feature vector keyed by the image file's content digest inside a *feature
space* (a digest of the network and the preprocessing). Entries live in append-only shard
files (``<cache>/features/<space>/*.npz``, ``SHARD_IMAGES`` vectors each) written atomically,
so an interrupted run keeps what it computed and several processes (or ranks) can add shards
side by side. Only the shards' digests are held in memory, as an index; vectors are read a
shard at a time when a matrix is assembled.

``.npz`` shards rather than Arrow or safetensors: numpy reads one member of an uncompressed
archive (the digests) without the other, writes need nothing beyond numpy, and the format
predates this index, so caches written before it stay valid.

A matrix of many rows is assembled into a memory-mapped file rather than the heap: its pages
are read back from disk when evicted, so a data set larger than memory still trains, and the
file is unlinked as soon as it is mapped, so nothing is left behind, however the process ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import uuid
import zipfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SHARD_IMAGES = 1024
# Matrices larger than this are memory-mapped files; smaller ones live in memory.
MAPPED_ABOVE_BYTES = 256 * 2**20


class FeatureCache:
    """Append-only shards of ``{digest: feature vector}`` for one feature space; without a
    directory (``--no-cache``, or a disk that refused a write) vectors are kept in memory."""

    def __init__(self, root: Path | None, space: str) -> None:
        self.directory = root / "features" / space if root is not None else None
        self._shards: list[Path] = []
        self._where: dict[str, tuple[int, int]] = {}  # digest -> (shard, row)
        self._memory: dict[str, np.ndarray] = {}
        self._loaded = False

    def known(self, digests: Sequence[str]) -> set[str]:
        """The digests among ``digests`` that have a vector."""
        self._load()
        return {d for d in digests if d in self._where or d in self._memory}

    def add(self, digests: Sequence[str], features: np.ndarray) -> None:
        """Keep the vectors ``features`` (one row per digest): one new shard on disk."""
        self._load()
        if not digests:
            return
        if self.directory is None or not self._write(digests, features):
            self._memory.update(zip(digests, np.array(features), strict=True))

    def gather(self, digests: Sequence[str], *, tag: str = "features") -> np.ndarray:
        """The vectors of ``digests`` (each must be ``known``) as one matrix in their order,
        read a shard at a time; memory-mapped when large (see the module docstring)."""
        self._load()
        wanted: dict[int, list[tuple[int, int]]] = defaultdict(list)  # shard -> (row there, row out)
        first = None
        for out_row, digest in enumerate(digests):
            if digest in self._memory:
                first = self._memory[digest] if first is None else first
                continue
            shard, row = self._where[digest]
            wanted[shard].append((row, out_row))
        shape, dtype = self._row_shape(first, wanted)
        matrix = _allocate((len(digests), *shape), dtype, self.directory, tag)
        for out_row, digest in enumerate(digests):
            if digest in self._memory:
                matrix[out_row] = self._memory[digest]
        for shard, rows in wanted.items():
            vectors = self._read(shard)
            here, there = (np.array(column) for column in zip(*rows, strict=True))
            matrix[there] = vectors[here]
        return matrix

    def _row_shape(
        self, first: np.ndarray | None, wanted: dict[int, list[tuple[int, int]]]
    ) -> tuple[tuple[int, ...], np.dtype]:
        if first is not None:
            return first.shape, first.dtype
        if wanted:
            sample = self._read(next(iter(wanted)))
            return sample.shape[1:], sample.dtype
        return (0,), np.dtype(np.float32)

    def _write(self, digests: Sequence[str], features: np.ndarray) -> bool:
        assert self.directory is not None
        name = f"{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp = self.directory / f".{name}.tmp"  # not *.npz: readers never see a half-written shard
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as handle:
                np.savez(handle, digests=np.array(digests, dtype="S32"), features=features)
            tmp.replace(self.directory / f"{name}.npz")
        except OSError as exc:  # the cache only saves time: a full or read-only disk is no failure
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            log.warning(
                "feature cache not written (%s: %s); features are kept in memory",
                self.directory,
                exc.strerror,
            )
            self.directory = None
            return False
        self._index(self.directory / f"{name}.npz", [d.encode() for d in digests])
        return True

    def _load(self) -> None:
        if self._loaded or self.directory is None or not self.directory.is_dir():
            self._loaded = True
            return
        for shard in sorted(self.directory.glob("[!.]*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as data:
                    self._index(shard, list(data["digests"]))
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
                log.warning("ignoring unreadable feature cache shard %s (%s)", shard, exc)
        self._loaded = True

    def _index(self, shard: Path, digests: list[bytes]) -> None:
        number = len(self._shards)
        self._shards.append(shard)
        for row, digest in enumerate(digests):
            self._where[digest.decode()] = (number, row)

    def _read(self, shard: int) -> np.ndarray:
        with np.load(self._shards[shard], allow_pickle=False) as data:
            return data["features"]


def _allocate(shape: tuple[int, ...], dtype: np.dtype, near: Path | None, tag: str) -> np.ndarray:
    """An uninitialised matrix: in memory, or over ``MAPPED_ABOVE_BYTES`` a memory-mapped file
    beside the cache (the temporary folder without one), unlinked once mapped."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if size <= MAPPED_ABOVE_BYTES or 0 in shape:
        return np.empty(shape, dtype=dtype)
    folder = near.parent.parent / "matrices" if near is not None else Path(tempfile.gettempdir())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}.npy"
        matrix = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        path.unlink()
    except OSError as exc:
        log.warning("feature matrix kept in memory (%s: %s)", folder, exc.strerror)
        return np.empty(shape, dtype=dtype)
    return matrix
