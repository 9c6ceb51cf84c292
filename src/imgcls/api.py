"""The workflows behind ``imgcls train`` and ``imgcls.load``, as plain functions.

``train`` reads like its recipe: resolve config -> scan data -> build backbone and extract
features -> split -> fit head (and calibrate) -> evaluate -> save.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from imgcls.classifier import Classifier
from imgcls.config import TrainConfig
from imgcls.data import TEST, TRAIN, VAL, scan_dataset
from imgcls.errors import DataError
from imgcls.model_io import versions, write_csv_atomic, write_json
from imgcls.probe import FeaturedDataset, ProbeFit, featurize, fit_and_score, install_head, split_mistakes
from imgcls.report import write_report
from imgcls.splits import MANIFEST_NAME, assign_splits, check_splits, split_counts, write_manifest

log = logging.getLogger(__name__)

SKIPPED_NAME = "skipped.csv"


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
        output: run directory to write (model/, metrics.json, report.html, splits.csv, run_config.json,
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
    run_dir = prepare_output_dir(Path(output), overwrite=overwrite) if output is not None else None
    featured = featurize(scan_dataset(data), cfg)
    splits = assign_splits(
        featured.records, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed
    )
    check_splits(featured.records, splits, featured.classes)
    log.info("splits: %s", ", ".join(f"{k} {v}" for k, v in split_counts(splits).items()))
    fit = fit_and_score(featured, splits, cfg)
    install_head(featured.model, fit.head)
    fit.metrics["timing"] = {
        "extract_s": round(featured.extract_seconds, 2),
        "total_s": round(time.perf_counter() - started, 2),
    }
    clf = Classifier(
        featured.model,
        classes=featured.classes,
        preprocessing=featured.preprocessing,
        config=_model_config(featured, cfg, fit),
    )
    if run_dir is not None:
        _save_run(run_dir, clf, featured, splits, cfg, fit.metrics)
        if cfg.report:
            _write_train_report(run_dir, featured, fit)
    return clf


def load(directory: str | Path) -> Classifier:
    """Reload a saved model (``RUN_DIR`` or ``RUN_DIR/model``)."""
    return Classifier.load(directory)


def prepare_output_dir(path: Path, *, overwrite: bool) -> Path:
    """Create ``path``; refuse a non-empty existing directory unless ``overwrite``."""
    if path.exists() and not path.is_dir():
        raise DataError(f"output {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise DataError(
            f"output directory {path} already exists and is not empty; "
            "choose another --output or pass --overwrite"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _model_config(featured: FeaturedDataset, cfg: TrainConfig, fit: ProbeFit) -> dict[str, Any]:
    head: dict[str, Any] = {"type": "logistic_regression", "C": fit.head.c}
    if "calibration" in fit.metrics:
        head["temperature"] = fit.metrics["calibration"]["temperature"]
    return {
        "backbone": {
            "name": featured.spec.name,
            "timm_arch": featured.spec.timm_arch,
            "weights": featured.weights.to_dict(),
        },
        "strategy": cfg.strategy,
        "head": head,
        "seed": cfg.seed,
        "metrics": {k: v for k, v in fit.metrics.items() if k in (VAL, TEST, TRAIN, "calibration")},
        "unreadable": featured.unreadable,
    }


def _save_run(
    run_dir: Path,
    clf: Classifier,
    featured: FeaturedDataset,
    splits: list[str],
    cfg: TrainConfig,
    metrics: dict[str, Any],
) -> None:
    write_manifest(run_dir / MANIFEST_NAME, featured.records, splits)
    write_skipped(run_dir / SKIPPED_NAME, featured.unreadable)
    write_json(run_dir / "metrics.json", metrics)
    write_json(run_dir / "run_config.json", run_config(featured, cfg))
    clf.save(run_dir / "model")
    log.info("saved run to %s", run_dir)


def _write_train_report(run_dir: Path, featured: FeaturedDataset, fit: ProbeFit) -> None:
    split = VAL if VAL in fit.probs else TEST if TEST in fit.probs else None
    if split is None:
        return
    write_report(
        run_dir / "report.html",
        title=f"imgcls: {featured.spec.name} on {featured.scan.root.name} ({split} split)",
        facts=[("backbone", featured.spec.name), ("split", split), ("run directory", str(run_dir))],
        report=fit.metrics[split],
        classes=featured.classes,
        mistakes=split_mistakes(featured, fit, split),
    )


def run_config(featured: FeaturedDataset, cfg: TrainConfig) -> dict[str, Any]:
    """The resolved settings of a run, enough to reproduce it (``--config`` reads it back)."""
    return {
        "train": cfg.to_dict(),
        "data": str(featured.scan.root.resolve()),
        "classes": featured.classes,
        "preprocessing": featured.preprocessing.to_dict(),
        "backbone": {"name": featured.spec.name, "weights": featured.weights.to_dict()},
        "versions": versions(),
    }


def write_skipped(path: Path, unreadable: dict[str, str]) -> None:
    write_csv_atomic(path, ["path", "reason"], sorted(unreadable.items()))
