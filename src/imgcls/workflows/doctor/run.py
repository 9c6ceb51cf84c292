"""``imgcls doctor``: what is wrong with a data set, before training on it.

Recipe: scan the source -> embed every image with the backbone (through the feature cache)
and fingerprint it (content digest, perceptual hash, size, colour) -> calibrate the
near-duplicate threshold on copies made of a sample of the images -> find duplicates and
leakage, likely mislabels (confident learning on out-of-fold probabilities of the linear
probe, on the folds ``imgcls cv`` uses), outliers, class imbalance and odd images -> write
``doctor.json``, ``issues.csv`` and ``doctor.html``, and (``write_clean``) a manifest without
what was found. Nothing in the data is moved or deleted.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imgcls.config import FOLDS, TrainConfig, with_settings
from imgcls.data.fingerprints import fingerprints
from imgcls.data.records import DatasetScan, ImageRecord
from imgcls.data.sources import open_source
from imgcls.data.splits import assign_folds, assign_splits
from imgcls.errors import DataError
from imgcls.evaluation.duplicates import leakage
from imgcls.evaluation.label_issues import LabelIssues, find_label_issues
from imgcls.evaluation.metrics import softmax
from imgcls.evaluation.outliers import find_outliers
from imgcls.inference.encoder import Encoder
from imgcls.inference.loading import open_encoder
from imgcls.inference.similarity import nearest, normalised
from imgcls.models.features import default_cache_dir
from imgcls.system.devices import CPU
from imgcls.system.progress import Progress, quiet_below_warning, takes_verbose
from imgcls.training import linear_head as head_module
from imgcls.training.heads import fit_head
from imgcls.workflows.doctor.copies import calibrate, duplicate_findings, duplicate_groups
from imgcls.workflows.doctor.findings import KINDS, Diagnosis, DoctorImages, Finding
from imgcls.workflows.doctor.outputs import write_clean_manifest, write_outputs

log = logging.getLogger(__name__)

NEIGHBOURS = 10  # nearest images looked at per image: duplicates, hash checks, outliers
IMBALANCE_RATIO = 5.0  # largest class over smallest, from which imbalance is a finding
EXTREME_ASPECT = 4.0  # longer side over shorter side
TINY_FRACTION = 0.25  # of the data set's median shorter side, below which an image is tiny
MIN_TINY_PX = 16


@takes_verbose
def doctor(
    data: str | Path | Any,
    output: str | Path | None = None,
    *,
    model: str | Path | None = None,
    config: TrainConfig | None = None,
    folds: int = FOLDS,
    write_clean: str | Path | None = None,
    relabel: bool = False,
    verbose: bool | None = None,
    **settings: Any,
) -> Diagnosis:
    """Check a data set for broken files, duplicates, leakage, likely mislabels and outliers.

    Args:
        data: any source ``train`` reads.
        output: folder for ``doctor.html``, ``doctor.json`` and ``issues.csv`` (``None``: none).
        model: a run directory or backbone name whose features to use (default: ``backbone``).
        config: settings (``backbone``, ``seed``, ``val_fraction`` ...); ``settings`` override them.
        folds: folds of the out-of-fold probabilities behind the mislabel check.
        write_clean: write a manifest of the data without the findings (see ``CLEANED_KINDS``).
        relabel: in that manifest, give likely mislabels their suggested label instead of
            leaving them out.
        verbose: as for ``train``: bars and notes (``True``), warnings only (``False``).
    """
    started = time.perf_counter()
    cfg = with_settings(config, settings)
    scan = open_source(data, **cfg.source_options(), min_classes=1)
    encoder = open_encoder(
        model or cfg.backbone,
        weights=cfg.weights,
        input_size=cfg.input_size,
        pretrained=cfg.pretrained,
        device=cfg.device,
    )
    images, findings = _read(scan, encoder, cfg)
    timing = {"read_s": round(time.perf_counter() - started, 2)}
    sims, idx = nearest(images.features, images.features, k=NEIGHBOURS + 1)
    calibration = calibrate(encoder, images, sims, idx, cfg.seed)
    groups = duplicate_groups(images, sims, idx, calibration)
    findings += duplicate_findings(images, groups)
    issues, label_check, probs = _label_issues(images, folds=folds, seed=cfg.seed, device=encoder.device)
    if issues is not None:
        findings += _mislabel_findings(images, issues)
    findings += _outlier_findings(images, sims)
    findings += _odd_image_findings(images)
    timing["total_s"] = round(time.perf_counter() - started, 2)
    diagnosis = Diagnosis(
        data=scan.location,
        backbone=encoder.origin["backbone"],
        images=len(images.records),
        findings=_ordered(findings),
        leakage=leakage(groups, images.splits),
        calibration=calibration,
        label_check=label_check,
        timing=timing,
        out_of_fold=probs,
        out_of_fold_ids=images.ids(range(len(images.records))),
        out_of_fold_labels=images.labels,
    )
    if output is not None:
        diagnosis.output = write_outputs(Path(output), diagnosis, images)
    if write_clean is not None:
        write_clean_manifest(Path(write_clean), scan, images, diagnosis, relabel=relabel)
    log.info("doctor: %s", ", ".join(f"{k} {v}" for k, v in diagnosis.counts().items()) or "no findings")
    return diagnosis


def _read(scan: DatasetScan, encoder: Encoder, cfg: TrainConfig) -> tuple[DoctorImages, list[Finding]]:
    """Embed and fingerprint every image; the unreadable ones and the ignored entries are findings."""
    splits = assign_splits(
        scan.records, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed
    )
    refs = [scan.absolute(r) for r in scan.records]
    cache = (Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()) if cfg.use_cache else None
    extraction = encoder.embed_files(refs, cache_dir=cache, progress=Progress("extracting features"))
    prints, failures = fingerprints(refs, progress=Progress("fingerprinting"))
    failures.update(extraction.failures)
    findings = [
        Finding("unreadable", [scan.records[i].path], [splits[i]], [scan.records[i].label], 1.0,
                "repair or remove the file", detail=reason)
        for i, reason in sorted(failures.items())
    ]  # fmt: skip
    findings += [
        Finding("ignored", [entry], [], [], 0.0, "nothing: it is not read", detail="not used as an image")
        for entry in scan.ignored
    ]
    keep = [i for i in range(len(refs)) if i not in failures]
    feature_row = np.cumsum(extraction.readable) - 1
    images = DoctorImages(
        records=[scan.records[i] for i in keep],
        refs=[refs[i] for i in keep],
        splits=[splits[i] for i in keep],
        features=normalised(extraction.features[feature_row[keep]]) if keep else np.zeros((0, 0), np.float32),
        prints=[prints[i] for i in keep],  # type: ignore[misc]
        classes=scan.classes,
    )
    if len(images.records) < 2:
        raise DataError(f"{scan.source} has fewer than 2 readable images: nothing to compare")
    return images, findings


def _label_issues(
    images: DoctorImages, *, folds: int, seed: int, device: torch.device
) -> tuple[LabelIssues | None, dict[str, Any], np.ndarray | None]:
    """Confident learning on out-of-fold probabilities of the linear probe."""
    counts = Counter(r.label for r in images.records)
    smallest = min(counts[c] for c in images.classes) if len(counts) == len(images.classes) else 0
    if len(images.classes) < 2 or smallest < 2:
        reason = "needs at least two classes with two readable images each"
        log.warning("mislabel check skipped: it %s", reason)
        return None, {"skipped": reason}, None
    folds = min(folds, smallest)
    probs = out_of_fold_probabilities(
        images.features, images.labels, images.records, folds=folds, seed=seed, device=device
    )
    issues = find_label_issues(images.labels, probs)
    return issues, _label_check(images, issues, probs, folds), probs


def _label_check(images: DoctorImages, issues: LabelIssues, probs: np.ndarray, folds: int) -> dict[str, Any]:
    accuracy = float((probs.argmax(axis=1) == images.labels).mean())
    return {
        "method": "confident learning on out-of-fold probabilities of the linear probe",
        "folds": folds,
        "out_of_fold_accuracy": accuracy,
        "flagged": int(issues.flagged.sum()),
        "thresholds": {c: float(t) for c, t in zip(images.classes, issues.thresholds, strict=True)},
    }


def out_of_fold_probabilities(
    features: np.ndarray,
    labels: np.ndarray,
    records: list[ImageRecord],
    *,
    folds: int,
    seed: int,
    device: torch.device = CPU,
) -> np.ndarray:
    """Class probabilities of every image from a linear probe that did not train on it (fitted
    on ``device``), on the stratified seeded folds ``imgcls cv`` deals."""
    assignment = np.array(assign_folds(records, folds=folds, seed=seed))
    num_classes = int(labels.max()) + 1
    probs = np.zeros((len(labels), num_classes))
    progress = Progress("out-of-fold probabilities", unit="folds")
    progress.start(0, folds)
    for fold in range(folds):
        held = assignment == fold
        with quiet_below_warning(head_module.__name__):  # one progress line for the folds, not a C each
            head = fit_head(
                "linear",
                features[~held],
                labels[~held],
                num_classes=num_classes,
                seed=seed,
                balanced=False,
                device=device,
            )
        probs[held] = softmax(head.logits(features[held]))
        progress(fold + 1, folds)
    return probs


def _mislabel_findings(images: DoctorImages, issues: LabelIssues) -> list[Finding]:
    findings = []
    for i in issues.flagged_ranked():
        suggested = images.classes[int(issues.suggested[i])]
        confidence = float(issues.self_confidence[i])
        findings.append(
            Finding("mislabel", images.ids([int(i)]), [images.splits[i]], [images.records[i].label],
                    round(1.0 - confidence, 4), f"check the label (the model says {suggested})",
                    suggested_label=suggested, detail=f"probability of its label {confidence:.3f}")
        )  # fmt: skip
    return findings


def _outlier_findings(images: DoctorImages, sims: np.ndarray) -> list[Finding]:
    outliers = find_outliers(sims)
    return [
        Finding("outlier", images.ids([int(i)]), [images.splits[i]], [images.records[i].label],
                round(float(outliers.z[i]), 2), "check that it belongs in the data set",
                detail=f"far from every other image (robust z {outliers.z[i]:.1f})")
        for i in np.flatnonzero(outliers.flagged)
    ]  # fmt: skip


def _odd_image_findings(images: DoctorImages) -> list[Finding]:
    counts = Counter(r.label for r in images.records)
    findings = []
    present = [counts[c] for c in images.classes]
    if min(present) and max(present) / min(present) >= IMBALANCE_RATIO:
        detail = ", ".join(f"{c} {counts[c]}" for c in images.classes)
        findings.append(
            Finding("imbalance", [], [], list(images.classes), max(present) / min(present),
                    "use `class_weights=auto`, or add images of the small classes", detail=detail)
        )  # fmt: skip
    short = np.array([min(p.width, p.height) for p in images.prints])
    tiny = max(MIN_TINY_PX, TINY_FRACTION * float(np.median(short)))
    mostly_colour = np.mean([p.grey for p in images.prints]) < 0.2
    for i, p in enumerate(images.prints):
        aspect = max(p.width, p.height) / max(1, min(p.width, p.height))
        odd = []
        if min(p.width, p.height) < tiny:
            odd.append(("tiny", f"{p.width}x{p.height} px", tiny / max(1, min(p.width, p.height))))
        if aspect >= EXTREME_ASPECT:
            odd.append(("extreme aspect", f"{p.width}x{p.height} px", aspect))
        if p.grey and mostly_colour:
            odd.append(("grey", "a grey image among colour ones", 1.0))
        findings += [
            Finding(kind, images.ids([i]), [images.splits[i]], [images.records[i].label], round(score, 3),
                    "check that it is usable", detail=detail)
            for kind, detail, score in odd
        ]  # fmt: skip
    return findings


def _ordered(findings: list[Finding]) -> list[Finding]:
    rank = {kind: n for n, kind in enumerate(KINDS)}
    return sorted(findings, key=lambda f: (rank[f.kind], -f.score))
