"""Stratified, seeded splits and the manifest."""

from __future__ import annotations

from collections import Counter

import pytest

from imgcls.data.records import ImageRecord
from imgcls.data.splits import (
    assign_splits,
    check_splits,
    read_manifest,
    splits_from_manifest,
    write_manifest,
)
from imgcls.errors import DataError


def _records(counts: dict[str, int], folder_split: str | None = None) -> list[ImageRecord]:
    return [ImageRecord(f"{c}/{i:03d}.jpg", c, folder_split) for c, n in counts.items() for i in range(n)]


def test_val_is_stratified_and_seeded():
    records = _records({"a": 50, "b": 20})
    splits = assign_splits(records, val_fraction=0.2, test_fraction=0.0, seed=1)
    per_class = Counter((r.label, s) for r, s in zip(records, splits, strict=True))
    assert per_class[("a", "val")] == 10 and per_class[("b", "val")] == 4
    assert splits == assign_splits(records, val_fraction=0.2, test_fraction=0.0, seed=1)
    assert splits != assign_splits(records, val_fraction=0.2, test_fraction=0.0, seed=2)


def test_order_of_records_does_not_change_the_split():
    records = _records({"a": 30, "b": 30})

    def split_by_path(ordered):
        splits = assign_splits(ordered, val_fraction=0.2, test_fraction=0, seed=0)
        return {r.path: s for r, s in zip(ordered, splits, strict=True)}

    assert split_by_path(records) == split_by_path(records[::-1])


def test_folder_splits_are_kept_and_test_is_carved_from_train():
    records = _records({"a": 20, "b": 20}, "train") + _records({"a": 5}, "val")
    splits = assign_splits(records, val_fraction=0.2, test_fraction=0.25, seed=0)
    counts = Counter(splits)
    assert counts["val"] == 5  # the val folder, nothing carved
    assert counts["test"] == 10


def test_a_test_split_is_carved_by_default_only_where_the_data_holds_nothing_out():
    records = _records({"a": 50, "b": 20, "c": 9})
    splits = assign_splits(records, val_fraction=0.2, test_fraction=None, seed=0)
    per_class = Counter((r.label, s) for r, s in zip(records, splits, strict=True))
    assert (per_class[("a", "val")], per_class[("a", "test")]) == (10, 5)
    assert (per_class[("b", "val")], per_class[("b", "test")]) == (4, 2)
    assert (per_class[("c", "val")], per_class[("c", "test")]) == (2, 0)  # too small to test on
    # val is carved first, so the test split takes images from train only
    no_test = assign_splits(records, val_fraction=0.2, test_fraction=0.0, seed=0)
    assert [s == "val" for s in splits] == [s == "val" for s in no_test]
    # a data set's own val folder is its held-out split: its training images stay whole
    held_out = _records({"a": 20}, "train") + _records({"a": 5}, "val")
    assert "test" not in assign_splits(held_out, val_fraction=0.2, test_fraction=None, seed=0)
    assert "test" in assign_splits(held_out, val_fraction=0.2, test_fraction=0.1, seed=0)


def test_tiny_classes_keep_a_training_image():
    records = _records({"a": 1, "b": 2, "c": 3})
    splits = assign_splits(records, val_fraction=0.5, test_fraction=0.0, seed=0)
    by_class = Counter((r.label, s) for r, s in zip(records, splits, strict=True))
    assert by_class[("a", "train")] == 1
    assert by_class[("b", "train")] == 1 and by_class[("b", "val")] == 1
    assert by_class[("c", "train")] >= 1


def test_class_without_training_images_is_an_error():
    records = [*_records({"a": 3}), ImageRecord("b/x.jpg", "b", "val")]
    with pytest.raises(DataError, match=r"\['b'\]"):
        check_splits(records, ["train", "train", "val", "val"], ["a", "b"])


def test_manifest_round_trip_and_relabel_detection(tmp_path):
    records = _records({"a": 4, "b": 4})
    splits = assign_splits(records, val_fraction=0.25, test_fraction=0, seed=0)
    path = tmp_path / "splits.csv"
    write_manifest(path, records, splits)
    manifest = read_manifest(path)
    assert splits_from_manifest(records, manifest, source=path) == splits
    moved = [ImageRecord(records[0].path, "b")]
    with pytest.raises(DataError, match="labelled 'b'"):
        splits_from_manifest(moved, manifest, source=path)
