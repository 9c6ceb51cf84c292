"""The feature cache's shards, its digest index, and matrices assembled a shard at a time."""

from __future__ import annotations

import numpy as np
import pytest
import timm

from imgcls.data.preprocessing import Preprocessing
from imgcls.models import feature_store
from imgcls.models.feature_store import FeatureCache
from imgcls.models.features import extract_features, feature_space
from tests.conftest import TINY_BACKBONE, write_class_folders

PRE = Preprocessing(64, 0.875, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_a_matrix_is_gathered_from_several_shards_in_the_asked_order(tmp_path, monkeypatch):
    monkeypatch.setattr(feature_store, "MAPPED_ABOVE_BYTES", 0)  # every matrix a mapped file
    cache = FeatureCache(tmp_path, "space")
    vectors = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    names = [f"d{i}" for i in range(7)]
    cache.add(names[:3], vectors[:3])
    cache.add(names[3:], vectors[3:])
    reopened = FeatureCache(tmp_path, "space")  # a later process: the index is read from disk
    assert reopened.known(["d6", "d1", "zz"]) == {"d6", "d1"}
    order = ["d6", "d0", "d4", "d0"]  # a file twice (identical content) is one entry
    matrix = reopened.gather(order)
    assert isinstance(matrix, np.memmap)
    np.testing.assert_array_equal(matrix, vectors[[6, 0, 4, 0]])
    assert not list((tmp_path / "matrices").iterdir())  # unlinked once mapped: nothing is left
    assert reopened._where and not reopened._memory  # vectors stay on disk, only digests are held


def test_without_a_directory_vectors_are_kept_in_memory(monkeypatch):
    cache = FeatureCache(None, "")
    cache.add(["a", "b"], np.eye(2, dtype=np.float32))
    np.testing.assert_array_equal(cache.gather(["b", "a"]), [[0, 1], [1, 0]])


def test_mapped_and_in_memory_extraction_give_the_same_features(tmp_path, monkeypatch):
    folder = write_class_folders(tmp_path / "data", per_class=5)
    paths = sorted(folder.rglob("*.png"))
    model = timm.create_model(TINY_BACKBONE, num_classes=0).eval()
    space = feature_space(model, PRE)
    monkeypatch.setattr(feature_store, "SHARD_IMAGES", 4)
    from imgcls.models import features

    monkeypatch.setattr(features, "SHARD_IMAGES", 4)  # several shards for 15 images
    fresh = extract_features(
        model, paths, PRE, cache=FeatureCache(tmp_path / "cache", space), workers=0, batch_size=4
    )
    assert fresh.computed == len(paths) and len(list((tmp_path / "cache").rglob("*.npz"))) == 4
    in_memory = extract_features(model, paths, PRE, cache=FeatureCache(None, ""), workers=0)
    monkeypatch.setattr(feature_store, "MAPPED_ABOVE_BYTES", 0)
    mapped = extract_features(
        model, paths, PRE, cache=FeatureCache(tmp_path / "cache", space), workers=0, batch_size=4
    )
    assert mapped.computed == 0 and isinstance(mapped.features, np.memmap)
    np.testing.assert_array_equal(mapped.features, in_memory.features)
    np.testing.assert_array_equal(fresh.features, in_memory.features)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_the_matrix_keeps_the_stored_dtype_and_shape(tmp_path, dtype):
    cache = FeatureCache(tmp_path, "maps")
    maps = np.arange(2 * 3 * 4, dtype=dtype).reshape(2, 3, 4)  # activation maps: rows of any shape
    cache.add(["x", "y"], maps)
    gathered = FeatureCache(tmp_path, "maps").gather(["y", "x"])
    assert gathered.dtype == dtype and gathered.shape == (2, 3, 4)
    np.testing.assert_array_equal(gathered, maps[::-1])
