"""Nearest neighbours by cosine similarity in a matrix of embeddings.

Exact search either way: numpy multiplies a chunk of queries with the matrix a block of rows
at a time (memory stays bounded however many queries and rows there are: doctor asks for the
neighbours of every image), and faiss's flat inner-product index, when it is installed, does
the same faster on large files.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from imgcls.config import SEARCH_ENGINES
from imgcls.errors import ConfigError

FAISS_MIN_ROWS = 100_000  # smaller files search as fast with numpy, without faiss's index build
BLOCK_ROWS = 65_536
QUERY_ROWS = 1_024


def normalised(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def nearest(
    queries: np.ndarray, vectors: np.ndarray, *, k: int, engine: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``vectors`` most cosine-similar to each query: similarities and row
    indices (queries x k), most similar first."""
    if engine not in SEARCH_ENGINES:
        raise ConfigError(f"unknown search engine {engine!r}; choose one of {', '.join(SEARCH_ENGINES)}")
    k = min(k, len(vectors))
    if k < 1:
        raise ConfigError("`k` must be >= 1 and the embedding file must hold rows")
    if engine == "auto":
        big = len(vectors) >= FAISS_MIN_ROWS
        engine = "faiss" if big and importlib.util.find_spec("faiss") is not None else "numpy"
    if engine == "faiss":
        return _faiss(normalised(queries), vectors, k)
    found = [
        _numpy(normalised(queries[start : start + QUERY_ROWS]), vectors, k)
        for start in range(0, len(queries), QUERY_ROWS)
    ]
    if not found:
        return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
    return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])


def _numpy(q: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    best_sim = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_idx = np.zeros((len(q), 0), dtype=np.int64)
    for start in range(0, len(vectors), BLOCK_ROWS):
        block = normalised(vectors[start : start + BLOCK_ROWS])
        sims = np.concatenate([best_sim, q @ block.T], axis=1)
        idx = np.concatenate([best_idx, np.arange(start, start + len(block))[None].repeat(len(q), 0)], axis=1)
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        best_sim, best_idx = np.take_along_axis(sims, top, 1), np.take_along_axis(idx, top, 1)
    return best_sim, best_idx


def _faiss(q: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        import faiss
    except ImportError:
        raise ConfigError("the faiss engine needs faiss: pip install 'imgcls[search]'") from None
    index = faiss.IndexFlatIP(vectors.shape[1])
    for start in range(0, len(vectors), BLOCK_ROWS):
        index.add(normalised(vectors[start : start + BLOCK_ROWS]))
    sims, idx = index.search(q, k)
    return sims, idx.astype(np.int64)
