"""A run's decisions are made once, by ``plan_run``, and every step reads them from the plan."""

from __future__ import annotations

import imgcls
from imgcls._files import SPLITS_FILE
from imgcls.config import TrainConfig
from imgcls.data.sources.folders import scan_dataset
from imgcls.data.splits import assign_splits, read_manifest
from imgcls.models.registry import get_backbone, resolve_preprocessing
from imgcls.training.run_plan import plan_run
from tests.conftest import TINY_BACKBONE

TINY = TrainConfig(backbone=TINY_BACKBONE, pretrained=False, input_size=64, report=False)


def test_the_plan_resolves_backbone_preprocessing_strategy_and_splits(image_folder):
    scan = scan_dataset(image_folder)
    plan = plan_run(scan, TINY.with_overrides({"strategy": "auto", "seed": 4}))
    assert plan.spec == get_backbone(TINY_BACKBONE)
    assert plan.preprocessing == resolve_preprocessing(plan.spec, input_size=64)
    assert plan.native_preprocessing == resolve_preprocessing(plan.spec, input_size=64, for_features=False)
    assert plan.strategy == "probe" and plan.auto == {"strategy": "probe", "reason": plan.auto["reason"]}
    n_train = sum(split == "train" for split in plan.splits)
    assert plan.auto["reason"].startswith(f"{n_train} training images")
    assert list(plan.splits) == assign_splits(scan.records, val_fraction=0.2, test_fraction=0.1, seed=4)
    assert plan.device.type == "cpu" and plan.features.precision in ("fp32", "bf16")


def test_an_unreadable_image_leaves_every_other_image_in_its_planned_split(image_folder, tmp_path):
    planned = dict(
        zip(
            (r.path for r in scan_dataset(image_folder).records),
            plan_run(scan_dataset(image_folder), TINY).splits,
            strict=True,
        )
    )
    broken = sorted(planned)[5]
    (image_folder / broken).write_bytes(b"not an image")
    imgcls.train(image_folder, tmp_path / "run", config=TINY)
    written = read_manifest(tmp_path / "run" / SPLITS_FILE)
    assert broken not in written
    assert {path: split for path, (_, split) in written.items()} == {
        path: split for path, split in planned.items() if path != broken
    }
