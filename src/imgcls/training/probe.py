"""The steps of the probe strategy, shared by ``train``, ``cross_validate`` and ``compare``.

Build the backbone once, extract (or fetch cached) features for every image once, then fit
and score a head (linear, MLP or kNN) on any assignment of images to train/val/test.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imgcls.data.preprocessing import Preprocessing
from imgcls.data.records import TEST, TRAIN, VAL, DatasetScan, ImageRecord
from imgcls.data.sources.webdataset import share_by_shard
from imgcls.errors import DataError
from imgcls.evaluation.calibration import fit_temperature
from imgcls.evaluation.metrics import classification_report, expected_calibration_error, softmax
from imgcls.evaluation.report import Example, confident_examples, confident_mistakes
from imgcls.models._batchnorm_fold import folded_for_inference
from imgcls.models.backbone import WeightsInfo, build_network, prepare_for_inference
from imgcls.models.features import (
    Extraction,
    FeatureCache,
    extract_features,
    feature_space,
)
from imgcls.models.heads import fold_temperature, install_classifier
from imgcls.models.registry import BackboneSpec
from imgcls.system.devices import place
from imgcls.system.distributed import SINGLE, Ranks
from imgcls.system.profiling import PROFILE
from imgcls.system.progress import Progress
from imgcls.training.heads import FittedHead, fit_head
from imgcls.training.linear_head import FeatureRows
from imgcls.training.run_plan import FeatureSettings, RunPlan

log = logging.getLogger(__name__)


@dataclass
class FeaturedDataset:
    """A scanned data set with the backbone that embeds it and every readable image's features.

    ``records``, ``features``, ``labels`` and ``splits`` hold the readable images only, in scan
    order; ``splits`` is the run plan's assignment of each.
    """

    scan: DatasetScan
    spec: BackboneSpec
    preprocessing: Preprocessing
    model: nn.Module
    weights: WeightsInfo
    records: list[ImageRecord]
    features: np.ndarray
    labels: np.ndarray
    splits: list[str]
    unreadable: dict[str, str]
    extract_seconds: float
    device: torch.device  # where the run computes: heads are fitted there too

    @property
    def classes(self) -> list[str]:
        return self.scan.classes


def featurize(scan: DatasetScan, plan: RunPlan) -> FeaturedDataset:
    """Build the planned backbone and extract features for every image in ``scan``."""
    model, info = build_model(plan, num_classes=len(scan.classes))
    extraction = extract_for(model, scan, plan.features, ranks=plan.ranks)
    return featured_dataset(scan, plan, model, info, extraction)


def featured_dataset(
    scan: DatasetScan, plan: RunPlan, model: nn.Module, info: WeightsInfo, extraction: Extraction
) -> FeaturedDataset:
    """Pair the readable images with their features, class indices and planned splits."""
    readable = [r for r, ok in zip(scan.records, extraction.readable, strict=True) if ok]
    splits = [s for s, ok in zip(plan.splits, extraction.readable, strict=True) if ok]
    index = {name: i for i, name in enumerate(scan.classes)}
    labels = np.array([index[r.label] for r in readable], dtype=np.int64)
    unreadable = {scan.records[i].path: reason for i, reason in sorted(extraction.failures.items())}
    return FeaturedDataset(
        scan,
        plan.spec,
        plan.preprocessing,
        model,
        info,
        readable,
        extraction.features,
        labels,
        splits,
        unreadable,
        extraction.seconds,
        plan.device,
    )


def build_model(
    plan: RunPlan, *, num_classes: int, options: dict[str, Any] | None = None
) -> tuple[nn.Module, WeightsInfo]:
    """The planned network with its pretrained weights, in eval mode and channels_last;
    ``options`` go to the model factory (e.g. dropout rates)."""
    torch.manual_seed(plan.seed)  # random init (and any new head) is reproducible
    with PROFILE.stage("build model + load weights"):
        model, info = build_network(
            plan.spec,
            num_classes=num_classes,
            weights=plan.weights,
            pretrained=plan.pretrained,
            options=options,
        )
    if not info.pretrained:
        log.warning(
            "NO PRETRAINED WEIGHTS: %s starts from random init (`pretrained=False`); "
            "expect far lower accuracy",
            plan.spec.name,
        )
    elif info.source == "file" and info.report is not None:
        log.info("weights: %s: %s", info.location, info.report.summary())
    return prepare_for_inference(model), info


def extract_for(
    model: nn.Module,
    scan: DatasetScan,
    settings: FeatureSettings,
    *,
    embed: nn.Module | None = None,
    output: str = "pooled",
    ranks: Ranks = SINGLE,
) -> Extraction:
    """Features (or ``embed``'s activation maps, named ``output``) of every image of ``scan``.

    Under torchrun each rank first computes its share of the images (``rank_share``) into
    the feature cache; after a barrier every rank reads all of them from there."""
    pre, device = settings.preprocessing, settings.device
    space = feature_space(model, pre, output=output, precision=settings.precision, device_type=device.type)
    paths = [scan.absolute(r) for r in scan.records]
    with PROFILE.stage("fold BatchNorm"):
        if embed is None:
            model = place(folded_for_inference(model, pre.input_size), device)
        else:
            embed = place(folded_for_inference(embed, pre.input_size), device)
    what = "extracting features" if output == "pooled" else "caching activations"

    def extract(chosen: list[Path], progress: Progress | None) -> Extraction:
        return extract_features(
            model,
            chosen,
            pre,
            cache=FeatureCache(settings.cache_dir, space),
            batch_size=settings.batch_size,
            workers=settings.workers,
            progress=progress,
            embed=embed,
            precision=settings.precision,
            device=device,
        )

    if ranks.active:
        started = time.perf_counter()
        share = extract([paths[i] for i in rank_share(scan, ranks, settings)], Progress(f"{what} ({ranks})"))
        log.info("features: %d computed by %s", share.computed, ranks)
        ranks.barrier("waiting for every process to finish its share of the features")
        extraction = extract(paths, None)
        extraction.seconds = time.perf_counter() - started  # the share, the wait and the reading
        _warn_if_cache_not_shared(extraction, ranks)
    else:
        extraction = extract(paths, Progress(what))
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


def rank_share(scan: DatasetScan, ranks: Ranks, settings: FeatureSettings) -> list[int]:
    """The images (indices into ``scan.records``) whose features this rank computes: whole
    shards of a source of shards, else every ``world_size``-th image. Only loader workers
    the user asked for must each find a shard: the automatic count, which grows with a GPU
    machine's cores, is not a reason to refuse the shards (imgcls's loader reads records, so
    a worker beside a busy shard waits for nothing)."""
    by_shard = share_by_shard(scan, ranks.rank, ranks.world_size, settings.workers or 0)
    return by_shard if by_shard is not None else ranks.shard(len(scan.records)).tolist()


def _warn_if_cache_not_shared(extraction: Extraction, ranks: Ranks) -> None:
    """A rank that computed images after the barrier did not find the other ranks' features in
    the cache: it is not on a file system they share (or could not be written)."""
    again = ranks.any(extraction.computed > 0, "comparing what the feature cache held")
    if again and ranks.is_main:
        log.warning(
            "some processes computed features that others had already computed: give every node "
            "the same `cache_dir`, on a file system they share"
        )


@dataclass
class ProbeFit:
    """A fitted head, its metrics on each split of one train/val/test assignment, and the
    class probabilities of the images of each split (``rows`` selects them)."""

    head: FittedHead
    metrics: dict[str, Any]
    rows: dict[str, np.ndarray]
    probs: dict[str, np.ndarray]


def fit_and_score(
    data: FeaturedDataset,
    splits: list[str],
    *,
    seed: int,
    balanced: bool,
    calibrate: bool,
    head: str = "linear",
) -> ProbeFit:
    """Fit a ``head`` (one of ``config.HEADS``) on the ``train`` rows (optionally calibrate on
    ``val``); score every split.

    ``balanced`` weights the classes inversely to their frequency (``class_weights="auto"``).
    """
    rows = {s: np.array([x == s for x in splits], dtype=bool) for s in (TRAIN, VAL, TEST)}
    train_rows = np.flatnonzero(rows[TRAIN])
    train = FeatureRows(data.features, train_rows)  # read a chunk at a time, never copied whole
    with PROFILE.stage(f"{head} head fit (settings chosen on train + final fit)"):
        fitted = fit_head(
            head,
            train,
            data.labels[train_rows],
            num_classes=len(data.classes),
            seed=seed,
            balanced=balanced,
            device=data.device,
        )
    held_out = [split for split in (VAL, TEST) if rows[split].any()]
    logits = {split: fitted.logits(data.features[rows[split]]) for split in held_out}
    labels = {split: data.labels[rows[split]] for split in held_out}
    metrics, probs, temperature = score_splits(logits, labels, data.classes, calibrate=calibrate)
    train_accuracy = fitted.accuracy(train, data.labels[train_rows])  # a temperature keeps the argmax
    metrics = {TRAIN: {"accuracy": train_accuracy, "n": len(train_rows)}, **metrics}
    if temperature is not None:
        fold_temperature(fitted.layer, temperature)
    metrics["head"] = fitted.summary
    return ProbeFit(fitted, metrics, rows, probs)


def score_splits(
    logits: dict[str, np.ndarray], labels: dict[str, np.ndarray], classes: list[str], *, calibrate: bool
) -> tuple[dict[str, Any], dict[str, np.ndarray], float | None]:
    """Metrics and class probabilities of each split from its logits: the full report for val
    and test, accuracy alone for train. With ``calibrate``, a temperature is fitted on val and
    applied first; it is returned so that the caller folds it into its classifier."""
    metrics: dict[str, Any] = {}
    temperature = None
    if calibrate:
        held_out = [s for s in (VAL, TEST) if s in logits]
        temperature, metrics["calibration"] = temperature_scaling(
            {s: logits[s] for s in held_out}, {s: labels[s] for s in held_out}
        )
        logits = {split: values / temperature for split, values in logits.items()}
    probs = {split: softmax(values) for split, values in logits.items()}
    for split, p in probs.items():
        report = classification_report(labels[split], p, classes)
        metrics[split] = {"accuracy": report["accuracy"], "n": report["n"]} if split == TRAIN else report
    return metrics, probs, temperature


def temperature_scaling(
    logits: dict[str, np.ndarray], labels: dict[str, np.ndarray]
) -> tuple[float, dict[str, Any]]:
    """The temperature fitted on the ``val`` logits, and ECE before/after on val and test."""
    if VAL not in logits:
        raise DataError("`calibrate` needs a validation split to fit the temperature on")
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


def split_galleries(data: FeaturedDataset, fit: ProbeFit, split: str) -> tuple[list[Example], list[Example]]:
    """The most confidently right images of each class and the most confidently wrong images
    of one split, for the report's galleries."""
    if split not in fit.probs:
        return [], []
    records = [r for r, keep in zip(data.records, fit.rows[split], strict=True) if keep]
    predictions = (
        [data.scan.absolute(r) for r in records],
        [r.path for r in records],
        data.labels[fit.rows[split]],
        fit.probs[split],
        data.classes,
    )
    return confident_examples(*predictions), confident_mistakes(*predictions)


def install_head(model: nn.Module, head: FittedHead) -> None:
    """Make the fitted head the network's classification layer."""
    install_classifier(model, head.layer)
