"""The workflows behind ``imgcls train`` and friends, as plain functions.

``train`` reads like its recipe: resolve config -> scan data -> build backbone -> extract
features -> split -> fit head -> evaluate -> save.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imgcls.backbone import WeightsInfo, build_network, prepare_for_inference, resolve_preprocessing
from imgcls.classifier import Classifier
from imgcls.config import Preprocessing, TrainConfig
from imgcls.data import TEST, TRAIN, VAL, DatasetScan, ImageRecord, scan_dataset
from imgcls.errors import DataError
from imgcls.features import (
    Extraction,
    FeatureCache,
    default_cache_dir,
    extract_features,
    feature_space,
)
from imgcls.head import LinearHead, fit_linear_head
from imgcls.metrics import classification_report
from imgcls.model_io import versions, write_json
from imgcls.registry import BackboneSpec, get_backbone
from imgcls.splits import MANIFEST_NAME, assign_splits, check_splits, split_counts, write_manifest

log = logging.getLogger(__name__)

SKIPPED_NAME = "skipped.csv"


@dataclass
class _LabelledFeatures:
    """Readable images with their features, class indices and splits (all aligned)."""

    records: list[ImageRecord]
    features: np.ndarray
    labels: np.ndarray
    splits: list[str]

    def rows(self, split: str) -> np.ndarray:
        return np.array([s == split for s in self.splits], dtype=bool)


def train(
    data: str | Path,
    output: str | Path | None = None,
    *,
    config: TrainConfig | None = None,
    backbone: str | None = None,
    weights: str | Path | None = None,
    pretrained: bool | None = None,
    seed: int | None = None,
    overwrite: bool = False,
) -> Classifier:
    """Train a classifier on a folder of labelled images (one sub-folder per class).

    Args:
        data: the image folder; ``train/`` + ``val/`` + ``test/`` sub-folders are honoured.
        output: run directory to write (model/, metrics.json, splits.csv, run_config.json,
            skipped.csv); ``None`` keeps everything in memory.
        config: full settings; the keyword arguments below override its fields.
        overwrite: allow writing into an existing, non-empty run directory.

    Returns:
        The trained classifier; ``clf.metrics`` holds the validation (and test) metrics.
    """
    started = time.perf_counter()
    overrides = {
        "backbone": backbone,
        "weights": str(weights) if weights else None,
        "pretrained": pretrained,
        "seed": seed,
    }
    cfg = (config or TrainConfig()).with_overrides(overrides)
    run_dir = _prepare_run_dir(Path(output), overwrite=overwrite) if output is not None else None
    scan = scan_dataset(data)
    spec = get_backbone(cfg.backbone)
    pre = resolve_preprocessing(spec, input_size=cfg.input_size)
    model, weights_info = _build(spec, cfg, num_classes=len(scan.classes))
    extraction = _extract(model, scan, pre, cfg)
    labelled = _split(scan, extraction, cfg)
    head = _fit_head(labelled, cfg, num_classes=len(scan.classes))
    install_head(model, head)
    metrics = _evaluate(labelled, head, scan.classes)
    metrics["timing"] = {
        "extract_s": round(extraction.seconds, 2),
        "total_s": round(time.perf_counter() - started, 2),
    }
    clf = Classifier(
        model,
        classes=scan.classes,
        preprocessing=pre,
        config=_model_config(spec, weights_info, cfg, metrics, head),
    )
    unreadable = {scan.records[i].path: reason for i, reason in sorted(extraction.failures.items())}
    clf.config["unreadable"] = unreadable
    if run_dir is not None:
        _save_run(run_dir, clf, labelled, unreadable, cfg, scan, metrics)
    return clf


def load(directory: str | Path) -> Classifier:
    """Reload a saved model (``RUN_DIR`` or ``RUN_DIR/model``)."""
    return Classifier.load(directory)


# -- steps ------------------------------------------------------------------------------------


def _prepare_run_dir(path: Path, *, overwrite: bool) -> Path:
    if path.exists() and not path.is_dir():
        raise DataError(f"output {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise DataError(
            f"output directory {path} already exists and is not empty; "
            "choose another --output or pass --overwrite"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _build(spec: BackboneSpec, cfg: TrainConfig, *, num_classes: int) -> tuple[nn.Module, WeightsInfo]:
    torch.manual_seed(cfg.seed)  # random init (and any new head) is reproducible
    model, info = build_network(spec, num_classes=num_classes, weights=cfg.weights, pretrained=cfg.pretrained)
    if not info.pretrained:
        log.warning(
            "NO PRETRAINED WEIGHTS: %s starts from random init (--no-pretrained); expect far lower accuracy",
            spec.name,
        )
    elif info.source == "file" and info.report is not None:
        log.info("weights: %s: %s", info.location, info.report.summary())
    return prepare_for_inference(model), info


def _extract(model: nn.Module, scan: DatasetScan, pre: Preprocessing, cfg: TrainConfig) -> Extraction:
    cache_root = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    cache = FeatureCache(cache_root if cfg.use_cache else None, feature_space(model, pre))
    paths = [scan.absolute(r) for r in scan.records]
    progress = _ProgressLog("extracting features")
    extraction = extract_features(
        model,
        paths,
        pre,
        cache=cache,
        batch_size=cfg.batch_size,
        workers=resolve_workers(cfg.workers, len(paths)),
        progress=progress,
    )
    cached = len(paths) - extraction.computed - len(extraction.failures)
    log.info(
        "features: %d computed, %d from cache, %d unreadable",
        extraction.computed,
        max(cached, 0),
        len(extraction.failures),
    )
    for index, reason in sorted(extraction.failures.items()):
        log.warning("skipped unreadable image %s: %s", paths[index], reason)
    return extraction


def resolve_workers(workers: int | None, n_images: int) -> int:
    """Decode in one background process for larger jobs; inline for small ones."""
    if workers is not None:
        return workers
    return 1 if n_images >= 256 else 0


def _split(scan: DatasetScan, extraction: Extraction, cfg: TrainConfig) -> _LabelledFeatures:
    records = [r for r, ok in zip(scan.records, extraction.readable, strict=True) if ok]
    splits = assign_splits(
        records, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed
    )
    check_splits(records, splits, scan.classes)
    index = {name: i for i, name in enumerate(scan.classes)}
    labels = np.array([index[r.label] for r in records], dtype=np.int64)
    log.info("splits: %s", ", ".join(f"{k} {v}" for k, v in split_counts(splits).items()))
    return _LabelledFeatures(records, extraction.features, labels, splits)


def _fit_head(labelled: _LabelledFeatures, cfg: TrainConfig, *, num_classes: int) -> LinearHead:
    train_rows = labelled.rows(TRAIN)
    return fit_linear_head(
        labelled.features[train_rows],
        labelled.labels[train_rows],
        num_classes=num_classes,
        seed=cfg.seed,
    )


def install_head(model: nn.Module, head: LinearHead) -> None:
    """Copy the fitted head into the network's classification layer."""
    layer = model.get_classifier()
    if not isinstance(layer, nn.Linear) or tuple(layer.weight.shape) != head.weight.shape:
        raise TypeError(f"expected a Linear classifier of shape {head.weight.shape}, found {layer}")
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(head.weight))
        layer.bias.copy_(torch.from_numpy(head.bias))


def _evaluate(labelled: _LabelledFeatures, head: LinearHead, classes: list[str]) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for split in (TRAIN, VAL, TEST):
        rows = labelled.rows(split)
        if not rows.any():
            continue
        predicted = head.logits(labelled.features[rows]).argmax(axis=1)
        report = classification_report(labelled.labels[rows], predicted, classes)
        metrics[split] = {"accuracy": report["accuracy"], "n": report["n"]} if split == TRAIN else report
    metrics["head"] = {
        "type": "logistic_regression",
        "C": head.c,
        "cv_accuracy": {str(k): v for k, v in head.cv_accuracy.items()},
    }
    return metrics


def _model_config(
    spec: BackboneSpec,
    info: WeightsInfo,
    cfg: TrainConfig,
    metrics: dict[str, Any],
    head: LinearHead,
) -> dict[str, Any]:
    return {
        "backbone": {"name": spec.name, "timm_arch": spec.timm_arch, "weights": info.to_dict()},
        "strategy": cfg.strategy,
        "head": {"type": "logistic_regression", "C": head.c},
        "seed": cfg.seed,
        "metrics": {k: v for k, v in metrics.items() if k in (VAL, TEST, TRAIN)},
    }


def _save_run(
    run_dir: Path,
    clf: Classifier,
    labelled: _LabelledFeatures,
    unreadable: dict[str, str],
    cfg: TrainConfig,
    scan: DatasetScan,
    metrics: dict[str, Any],
) -> None:
    write_manifest(run_dir / MANIFEST_NAME, labelled.records, labelled.splits)
    _write_skipped(run_dir / SKIPPED_NAME, unreadable)
    write_json(run_dir / "metrics.json", metrics)
    write_json(
        run_dir / "run_config.json",
        {
            "train": cfg.to_dict(),
            "data": str(scan.root.resolve()),
            "classes": scan.classes,
            "preprocessing": clf.preprocessing.to_dict(),
            "backbone": clf.config["backbone"],
            "versions": versions(),
        },
    )
    clf.save(run_dir / "model")
    log.info("saved run to %s", run_dir)


def _write_skipped(path: Path, unreadable: dict[str, str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "reason"])
        writer.writerows(sorted(unreadable.items()))


class _ProgressLog:
    """Logs progress at most every few seconds (library code never prints)."""

    def __init__(self, what: str, every_s: float = 5.0) -> None:
        self.what, self.every_s = what, every_s
        self.started = self.last = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - self.last < self.every_s and done < total:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        log.info("%s: %d/%d images (%.0f img/s)", self.what, done, total, rate)
