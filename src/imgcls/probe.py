"""The steps of the probe strategy, shared by ``train``, ``cross_validate`` and ``compare``.

Build the backbone once, extract (or fetch cached) features for every image once, then fit
and score a linear head on any assignment of images to train/val/test.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imgcls.backbone import WeightsInfo, build_network, prepare_for_inference, resolve_preprocessing
from imgcls.batchnorm_fold import folded_for_inference
from imgcls.calibration import fit_temperature
from imgcls.config import Preprocessing, TrainConfig
from imgcls.data import TEST, TRAIN, VAL, DatasetScan, ImageRecord
from imgcls.errors import DataError
from imgcls.features import Extraction, FeatureCache, default_cache_dir, extract_features, feature_space
from imgcls.head import LinearHead, fit_linear_head
from imgcls.metrics import classification_report, expected_calibration_error
from imgcls.precision import resolve_precision
from imgcls.predictions import softmax
from imgcls.profiling import PROFILE
from imgcls.registry import BackboneSpec, get_backbone
from imgcls.report import Mistake, confident_mistakes

log = logging.getLogger(__name__)


@dataclass
class FeaturedDataset:
    """A scanned data set with the backbone that embeds it and every readable image's features."""

    scan: DatasetScan
    spec: BackboneSpec
    preprocessing: Preprocessing
    model: nn.Module
    weights: WeightsInfo
    records: list[ImageRecord]
    features: np.ndarray
    labels: np.ndarray
    unreadable: dict[str, str]
    extract_seconds: float

    @property
    def classes(self) -> list[str]:
        return self.scan.classes


def featurize(scan: DatasetScan, cfg: TrainConfig) -> FeaturedDataset:
    """Build the configured backbone and extract features for every image in ``scan``."""
    spec = get_backbone(cfg.backbone)
    pre = resolve_preprocessing(spec, input_size=cfg.input_size)
    model, info = build_model(spec, cfg, num_classes=len(scan.classes))
    return featured_dataset(scan, spec, pre, model, info, extract_for(model, scan, pre, cfg))


def featured_dataset(
    scan: DatasetScan,
    spec: BackboneSpec,
    pre: Preprocessing,
    model: nn.Module,
    info: WeightsInfo,
    extraction: Extraction,
) -> FeaturedDataset:
    """Pair the readable images with their features and class indices."""
    readable = [r for r, ok in zip(scan.records, extraction.readable, strict=True) if ok]
    index = {name: i for i, name in enumerate(scan.classes)}
    labels = np.array([index[r.label] for r in readable], dtype=np.int64)
    unreadable = {scan.records[i].path: reason for i, reason in sorted(extraction.failures.items())}
    return FeaturedDataset(
        scan, spec, pre, model, info, readable, extraction.features, labels, unreadable, extraction.seconds
    )


def build_model(
    spec: BackboneSpec, cfg: TrainConfig, *, num_classes: int, options: dict[str, Any] | None = None
) -> tuple[nn.Module, WeightsInfo]:
    """The configured network with its pretrained weights, in eval mode and channels_last;
    ``options`` go to the model factory (e.g. dropout rates)."""
    torch.manual_seed(cfg.seed)  # random init (and any new head) is reproducible
    with PROFILE.stage("build model + load weights"):
        model, info = build_network(
            spec, num_classes=num_classes, weights=cfg.weights, pretrained=cfg.pretrained, options=options
        )
    if not info.pretrained:
        log.warning(
            "NO PRETRAINED WEIGHTS: %s starts from random init (--no-pretrained); expect far lower accuracy",
            spec.name,
        )
    elif info.source == "file" and info.report is not None:
        log.info("weights: %s: %s", info.location, info.report.summary())
    return prepare_for_inference(model), info


def extract_for(
    model: nn.Module,
    scan: DatasetScan,
    pre: Preprocessing,
    cfg: TrainConfig,
    *,
    embed: nn.Module | None = None,
    output: str = "pooled",
) -> Extraction:
    """Features (or ``embed``'s activation maps, named ``output``) of every image of ``scan``."""
    cache_root = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    precision = resolve_precision(cfg.precision, torch.device("cpu"))
    space = feature_space(model, pre, output=output, precision=precision)
    cache = FeatureCache(cache_root if cfg.use_cache else None, space)
    paths = [scan.absolute(r) for r in scan.records]
    with PROFILE.stage("fold BatchNorm"):
        if embed is None:
            model = folded_for_inference(model, pre.input_size)
        else:
            embed = folded_for_inference(embed, pre.input_size)
    extraction = extract_features(
        model,
        paths,
        pre,
        cache=cache,
        batch_size=cfg.batch_size,
        workers=resolve_workers(cfg.workers, len(paths)),
        progress=ProgressLog("extracting features" if output == "pooled" else "caching activations"),
        embed=embed,
        precision=precision,
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


@dataclass
class ProbeFit:
    """A fitted head, its metrics on each split of one train/val/test assignment, and the
    class probabilities of the images of each split (``rows`` selects them)."""

    head: LinearHead
    metrics: dict[str, Any]
    rows: dict[str, np.ndarray]
    probs: dict[str, np.ndarray]


def fit_and_score(data: FeaturedDataset, splits: list[str], cfg: TrainConfig) -> ProbeFit:
    """Fit the head on the ``train`` rows (optionally calibrate on ``val``); score every split."""
    rows = {s: np.array([x == s for x in splits], dtype=bool) for s in (TRAIN, VAL, TEST)}
    with PROFILE.stage("head fit (C by CV + final fit)"):
        head = fit_linear_head(
            data.features[rows[TRAIN]],
            data.labels[rows[TRAIN]],
            num_classes=len(data.classes),
            seed=cfg.seed,
            balanced=cfg.class_weights == "auto",
        )
    calibration = None
    if cfg.calibrate:
        head, calibration = _calibrate(data, rows, head)
    metrics: dict[str, Any] = {}
    probs: dict[str, np.ndarray] = {}
    for split, mask in rows.items():
        if mask.any():
            probs[split] = softmax(head.logits(data.features[mask]))
            report = classification_report(data.labels[mask], probs[split], data.classes)
            metrics[split] = {"accuracy": report["accuracy"], "n": report["n"]} if split == TRAIN else report
    metrics["head"] = {
        "type": "logistic_regression",
        "C": head.c,
        "cv_accuracy": {str(k): v for k, v in head.cv_accuracy.items()},
    }
    if calibration is not None:
        metrics["calibration"] = calibration
    return ProbeFit(head, metrics, rows, probs)


def _calibrate(
    data: FeaturedDataset, rows: dict[str, np.ndarray], head: LinearHead
) -> tuple[LinearHead, dict[str, Any]]:
    splits = [s for s in (VAL, TEST) if rows[s].any()]
    temperature, summary = temperature_scaling(
        {s: head.logits(data.features[rows[s]]) for s in splits}, {s: data.labels[rows[s]] for s in splits}
    )
    return replace(head, weight=head.weight / temperature, bias=head.bias / temperature), summary


def temperature_scaling(
    logits: dict[str, np.ndarray], labels: dict[str, np.ndarray]
) -> tuple[float, dict[str, Any]]:
    """The temperature fitted on the ``val`` logits, and ECE before/after on val and test."""
    if VAL not in logits:
        raise DataError("--calibrate needs a validation split to fit the temperature on")
    temperature = fit_temperature(logits[VAL], labels[VAL])
    summary: dict[str, Any] = {"method": "temperature", "temperature": temperature, "fitted_on": VAL}
    for split in (VAL, TEST):
        if split in logits:
            y = labels[split]
            summary[f"{split}_ece_before"] = expected_calibration_error(y, softmax(logits[split]))
            summary[f"{split}_ece_after"] = expected_calibration_error(
                y, softmax(logits[split] / temperature)
            )
    log.info("temperature scaling: T=%.3f fitted on val", temperature)
    return temperature, summary


def split_mistakes(data: FeaturedDataset, fit: ProbeFit, split: str) -> list[Mistake]:
    """The most confidently wrong images of one split, for the report's gallery."""
    if split not in fit.probs:
        return []
    records = [r for r, keep in zip(data.records, fit.rows[split], strict=True) if keep]
    return confident_mistakes(
        [data.scan.absolute(r) for r in records],
        [r.path for r in records],
        data.labels[fit.rows[split]],
        fit.probs[split],
        data.classes,
    )


def install_head(model: nn.Module, head: LinearHead) -> None:
    """Copy the fitted head into the network's classification layer."""
    layer = model.get_classifier()
    if not isinstance(layer, nn.Linear) or tuple(layer.weight.shape) != head.weight.shape:
        raise TypeError(f"expected a Linear classifier of shape {head.weight.shape}, found {layer}")
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(head.weight))
        layer.bias.copy_(torch.from_numpy(head.bias))


class ProgressLog:
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
