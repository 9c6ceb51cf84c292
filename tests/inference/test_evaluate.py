"""Which images a split is when a model is evaluated: the run's splits.csv first, else the
data's own split folders, else an error that says how to choose."""

from __future__ import annotations

import pytest

from imgcls.data.sources import open_source
from imgcls.data.splits import write_manifest
from imgcls.errors import DataError
from imgcls.inference.evaluate import manifest_path, select_split
from tests.conftest import write_class_folders


def test_the_runs_manifest_wins_over_the_folders_and_folders_serve_other_data(tmp_path):
    data = tmp_path / "data"
    write_class_folders(data / "train", per_class=4)
    write_class_folders(data / "val", per_class=2)
    scan = open_source(data)
    assert {r.folder_split for r in select_split(scan, "val", None)} == {"val"}
    assert len(select_split(scan, "all", None)) == len(scan.records) == 18
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    first_of_train = {
        r.path for r in scan.records if r.folder_split == "train" and r.path.endswith("_000.png")
    }
    splits = ["test" if r.path in first_of_train else r.folder_split or "train" for r in scan.records]
    write_manifest(run / "splits.csv", scan.records, splits)
    manifest = manifest_path(run / "model")
    assert manifest == run / "splits.csv"
    assert sorted(r.path for r in select_split(scan, "test", manifest)) == [
        "train/blue/blue_000.png", "train/green/green_000.png", "train/red/red_000.png",
    ]  # fmt: skip
    with pytest.raises(DataError, match="unknown split 'holdout'"):
        select_split(scan, "holdout", manifest)


def test_data_without_that_split_says_to_use_all(tmp_path):
    scan = open_source(write_class_folders(tmp_path / "flat", per_class=3))
    with pytest.raises(DataError, match="nothing says which images form the test split; use `split=all`"):
        select_split(scan, "test", None)
    assert manifest_path(None) is None and manifest_path(tmp_path) is None
