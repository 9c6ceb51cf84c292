"""The linear head past the sizes that fit whole: a subsampled C search, chunked passes over
memory-mapped features, and the mini-batch final fit, each against the whole-data fit."""

from __future__ import annotations

import numpy as np
import pytest

from imgcls.training import linear_head as head
from imgcls.training.linear_head import FeatureRows, Standardiser, fit_linear_head, search_sample


def _clusters(n: int, seed: int, classes: int = 8, dim: int = 32) -> tuple[np.ndarray, np.ndarray]:
    centres = np.random.default_rng(99).normal(0, 0.6, (classes, dim))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    scales = np.random.default_rng(7).uniform(0.5, 4.0, dim)  # features on different scales
    return ((centres[y] + rng.normal(0, 1, (n, dim))) * scales + 3.0).astype(np.float32), y


def _accuracy(fitted: head.LinearHead, x: np.ndarray, y: np.ndarray) -> float:
    return float((fitted.logits(x).argmax(1) == y).mean())


@pytest.fixture(scope="module")
def data():
    return _clusters(6000, seed=0), _clusters(4000, seed=1)


@pytest.fixture(scope="module")
def whole(data):
    (x, y), _ = data
    return fit_linear_head(x, y, num_classes=8, seed=0)


def test_the_subsampled_search_and_the_chunked_fit_match_the_whole_data_fit(data, whole, monkeypatch):
    (x, y), (x_test, y_test) = data
    monkeypatch.setattr(head, "SEARCH_ROWS", 1500)
    monkeypatch.setattr(head, "CHUNK_ROWS", 700)  # several chunks, a short last one
    sampled = fit_linear_head(x, y, num_classes=8, seed=0)
    # The same objective on every row at the chosen C: where C agrees, so does the head.
    if sampled.c == whole.c:
        np.testing.assert_allclose(sampled.logits(x_test), whole.logits(x_test), atol=2e-3)
    assert abs(_accuracy(sampled, x_test, y_test) - _accuracy(whole, x_test, y_test)) <= 0.01


def test_the_minibatch_fit_comes_within_a_point_of_lbfgs(data, whole, monkeypatch):
    (x, y), (x_test, y_test) = data
    monkeypatch.setattr(head, "SEARCH_ROWS", 1500)
    monkeypatch.setattr(head, "MINIBATCH_ABOVE", 2000)
    stepped = fit_linear_head(x, y, num_classes=8, seed=0)
    assert _accuracy(stepped, x_test, y_test) >= _accuracy(whole, x_test, y_test) - 0.01
    assert _accuracy(whole, x_test, y_test) > 0.6  # a problem with something to learn


def test_a_memory_mapped_split_fits_as_its_copy_does(data, tmp_path, monkeypatch):
    (x, y), _ = data
    path = tmp_path / "features.npy"
    np.save(path, x)
    mapped = np.load(path, mmap_mode="r")
    rows = np.flatnonzero(np.arange(len(y)) % 3 != 0)  # a training split: two thirds of the rows
    monkeypatch.setattr(head, "CHUNK_ROWS", 1000)
    from_map = fit_linear_head(FeatureRows(mapped, rows), y[rows], num_classes=8, seed=0)
    from_copy = fit_linear_head(x[rows], y[rows], num_classes=8, seed=0)
    assert from_map.c == from_copy.c
    np.testing.assert_allclose(from_map.weight, from_copy.weight, rtol=1e-5, atol=1e-6)


def test_chunked_moments_are_the_whole_arrays(data, monkeypatch):
    (x, _), _ = data
    whole = Standardiser.of(x)
    monkeypatch.setattr(head, "CHUNK_ROWS", 512)
    chunked = Standardiser.of(x)
    # float32 sums over 6000 rows against float64 ones: a few float32 epsilons apart
    np.testing.assert_allclose(chunked.centre, whole.centre, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(chunked.scale, whole.scale, rtol=1e-5)


def test_the_search_sample_is_stratified_seeded_and_keeps_rare_classes():
    y = np.concatenate([np.zeros(9000, dtype=int), np.ones(950, dtype=int), np.full(3, 2)])
    sample = search_sample(y, seed=0, rows=1000)
    assert sample is not None and np.all(np.diff(sample) > 0)
    counts = np.bincount(y[sample])
    assert abs(counts[0] - 904) <= 1 and abs(counts[1] - 95) <= 1 and counts[2] == 2
    np.testing.assert_array_equal(sample, search_sample(y, seed=0, rows=1000))
    assert search_sample(y, seed=0, rows=len(y)) is None  # small data: every row, as always
