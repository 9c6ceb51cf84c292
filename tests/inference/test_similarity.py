"""Exact nearest neighbours with bounded memory: queries and rows both taken a chunk at a time."""

from __future__ import annotations

import numpy as np

from imgcls.inference import similarity
from imgcls.inference.similarity import nearest, normalised


def test_chunked_queries_and_rows_find_the_brute_force_neighbours(monkeypatch):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(700, 12)).astype(np.float32)
    queries = rng.normal(size=(230, 12)).astype(np.float32)
    expected = normalised(queries) @ normalised(vectors).T
    monkeypatch.setattr(similarity, "QUERY_ROWS", 64)  # four query chunks, a short last one
    monkeypatch.setattr(similarity, "BLOCK_ROWS", 100)
    sims, idx = nearest(queries, vectors, k=5, engine="numpy")
    # Compared by value: products taken in other blocks round differently (float32, 12 terms),
    # which may swap two neighbours whose similarities tie to that rounding.
    top = -np.sort(-expected, axis=1)[:, :5]
    np.testing.assert_allclose(sims, top, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(expected, idx, 1), top, atol=1e-5)
    assert all(len(set(row)) == 5 for row in idx.tolist())
    assert nearest(queries[:0], vectors, k=3, engine="numpy")[1].shape == (0, 3)
