"""Cross-validation and comparison (of backbones, heads, or both).

Features are extracted once per backbone and reused by every head, fold and repeat; each fold
runs the same ``fit_and_score`` step as ``train`` (including the inner choice of the
regulariser on that fold's training images only), so there is no second implementation.
With ``strategy=finetune`` each fold runs ``train``'s fine-tune instead, from the pretrained
network, on the other folds' images (sensible on a GPU: it costs a fine-tune per fold).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgcls._files import (
    COMPARE_FILE,
    CV_FILE,
    CV_SPLITS_FILE,
    REPORT_FILE,
    RUN_CONFIG_FILE,
    SKIPPED_FILE,
    write_json,
)
from imgcls.config import FOLDS, REPEATS, TrainConfig, with_settings
from imgcls.data.records import TEST, TRAIN, VAL
from imgcls.data.sources import open_source
from imgcls.data.splits import assign_folds, check_splits, write_fold_manifest
from imgcls.errors import ConfigError, DataError
from imgcls.evaluation.metrics import classification_report
from imgcls.evaluation.report import Example, confident_mistakes, write_report
from imgcls.evaluation.stats import corrected_paired_t_test, summarize
from imgcls.models.backbone import count_parameters
from imgcls.system.progress import Progress, takes_verbose
from imgcls.training.finetune import finetune
from imgcls.training.probe import FeaturedDataset, ProbeFit, fit_and_score
from imgcls.training.run_plan import plan_run
from imgcls.workflows.ray_extraction import featurize_on_engine
from imgcls.workflows.train import prepare_output_dir, run_config, write_skipped

log = logging.getLogger(__name__)

FOLD_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "log_loss", "ece")
EXCLUDED = "excluded"


@dataclass
class CrossValidation:
    """Per-fold metrics and their summary for one backbone and head."""

    backbone: str
    head: str
    folds: int
    repeats: int
    n_images: int
    per_fold: list[dict[str, Any]]
    summary: dict[str, dict[str, Any]]
    timing: dict[str, float]
    params: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)
    out_of_fold: dict[str, Any] = field(default_factory=dict)
    mistakes: list[Example] = field(default_factory=list)
    name: str = ""  # what a comparison calls it: the backbone, the head, or both

    def __post_init__(self) -> None:
        self.name = self.name or self.backbone

    @property
    def accuracies(self) -> list[float]:
        return [row["accuracy"] for row in self.per_fold]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("mistakes")
        return data


@takes_verbose
def cross_validate(
    data: str | Path,
    output: str | Path | None = None,
    *,
    config: TrainConfig | None = None,
    folds: int = FOLDS,
    repeats: int = REPEATS,
    overwrite: bool = False,
    verbose: bool | None = None,
    **settings: Any,
) -> CrossValidation:
    """Stratified k-fold cross-validation of the probe on all non-test images of ``data``.

    Recipe: resolve config -> scan data -> extract features once -> for each repeat, assign
    seeded stratified folds -> for each fold, fit on the other folds and score this one ->
    summarise (mean, std, 95% interval) -> save ``cv.json`` and ``cv_splits.csv``.
    ``settings`` are ``TrainConfig`` fields, overriding ``config``; ``verbose`` as for ``train``.
    """
    cfg = _cv_config(with_settings(config, settings), folds=folds, repeats=repeats)
    started = time.perf_counter()
    scan = open_source(data, **cfg.source_options())
    run_dir = prepare_output_dir(Path(output), overwrite=overwrite, data=scan) if output is not None else None
    featured = featurize_on_engine(scan, cfg)
    return _cross_validate_features(
        featured, cfg, folds=folds, repeats=repeats, run_dir=run_dir, started=started
    )


def _cross_validate_features(
    featured: FeaturedDataset,
    cfg: TrainConfig,
    *,
    folds: int,
    repeats: int,
    run_dir: Path | None,
    started: float,
    name: str = "",
) -> CrossValidation:
    """Cross-validate ``cfg.head`` on extracted features; write the cv files to ``run_dir``."""
    result, folds_by_repeat = _run_folds(featured, cfg, folds=folds, repeats=repeats)
    result.name = name or result.name
    result.timing["total_s"] = round(time.perf_counter() - started, 2)
    if run_dir is not None:
        pool = [r for r in featured.records if r.folder_split != TEST]
        write_fold_manifest(run_dir / CV_SPLITS_FILE, pool, folds_by_repeat)
        write_skipped(run_dir / SKIPPED_FILE, featured.unreadable)
        write_json(run_dir / CV_FILE, result.to_dict())
        if cfg.report:
            _write_cv_report(run_dir / REPORT_FILE, result, featured)
        write_json(
            run_dir / RUN_CONFIG_FILE,
            {**run_config(featured, cfg), "cv": {"folds": folds, "repeats": repeats}},
        )
    return result


def _cv_config(config: TrainConfig | None, *, folds: int, repeats: int) -> TrainConfig:
    if folds < 2 or repeats < 1:
        raise ConfigError(f"need `folds` >= 2 and `repeats` >= 1, got {folds} and {repeats}")
    cfg = config or TrainConfig()
    if cfg.strategy not in ("probe", "finetune"):
        raise ConfigError(
            f"cross-validation runs `strategy=probe` or `strategy=finetune` (each fold fine-tuned), "
            f"not {cfg.strategy!r}: the folds must all run the same strategy"
        )
    if cfg.calibrate:
        # The held-out fold would both fit and judge the temperature.
        log.warning("calibration is not cross-validated; ignoring `calibrate`")
        cfg = dataclasses.replace(cfg, calibrate=False)
    return cfg


def _run_folds(
    featured: FeaturedDataset, cfg: TrainConfig, *, folds: int, repeats: int
) -> tuple[CrossValidation, list[list[int]]]:
    pool = [i for i, r in enumerate(featured.records) if r.folder_split != TEST]
    if not pool:
        raise DataError(f"{featured.scan.source} has no images outside its test/ folder to cross-validate")
    pool_records = [featured.records[i] for i in pool]
    check_splits(pool_records, [TRAIN] * len(pool_records), featured.classes)  # every class readable
    per_fold: list[dict[str, Any]] = []
    folds_by_repeat: list[list[int]] = []
    out_of_fold = np.zeros((len(featured.records), len(featured.classes)))
    fit_started = time.perf_counter()
    fit_fold, method = _fold_fitter(featured, cfg)
    progress = Progress(f"cross-validating {featured.spec.name} ({method})", unit="folds")
    progress.start(0, folds * repeats)
    for repeat in range(repeats):
        assignment = assign_folds(pool_records, folds=folds, seed=cfg.seed + repeat)
        folds_by_repeat.append(assignment)
        for fold in range(folds):
            splits = [EXCLUDED] * len(featured.records)
            for i, f in zip(pool, assignment, strict=True):
                splits[i] = VAL if f == fold else TRAIN
            fit = fit_fold(splits)
            if repeat == 0:
                out_of_fold[fit.rows[VAL]] = fit.probs[VAL]
            row = {
                "repeat": repeat,
                "fold": fold,
                "n_train": fit.metrics[TRAIN]["n"],
                "n_val": fit.metrics[VAL]["n"],
            }
            row.update({m: fit.metrics[VAL][m] for m in FOLD_METRICS})
            per_fold.append(row)
            log.info("repeat %d fold %d: accuracy %.4f", repeat, fold, row["accuracy"])
            progress(len(per_fold), folds * repeats)
    result = CrossValidation(
        backbone=featured.spec.name,
        head=cfg.head if cfg.strategy == "probe" else "finetuned",
        folds=folds,
        repeats=repeats,
        n_images=len(pool),
        per_fold=per_fold,
        summary={m: summarize([row[m] for row in per_fold]) for m in FOLD_METRICS},
        timing={
            "extract_s": round(featured.extract_seconds, 2),
            "fit_s": round(time.perf_counter() - fit_started, 2),
        },
        params=count_parameters(featured.spec),
        unreadable=featured.unreadable,
    )
    _add_out_of_fold(result, featured, pool, out_of_fold[pool])
    return result, folds_by_repeat


def _fold_fitter(featured: FeaturedDataset, cfg: TrainConfig) -> tuple[Callable[[list[str]], ProbeFit], str]:
    """How one fold is fitted (given every readable image's split) and its name."""
    if cfg.strategy == "finetune":
        return (lambda splits: _finetuned_fold(featured, cfg, splits)), "fine-tuned per fold"

    def probe(splits: list[str]) -> ProbeFit:
        balanced = cfg.class_weights == "auto"
        return fit_and_score(
            featured, splits, seed=cfg.seed, balanced=balanced, calibrate=False, head=cfg.head
        )

    return probe, f"{cfg.head} head"


def _finetuned_fold(featured: FeaturedDataset, cfg: TrainConfig, splits: list[str]) -> ProbeFit:
    """``train``'s fine-tune on the fold's training images, scored on its held-out ones."""
    scan = featured.scan
    by_record = {r.path: split for r, split in zip(featured.records, splits, strict=True)}
    plan = plan_run(scan, cfg)
    plan = dataclasses.replace(plan, splits=tuple(by_record.get(r.path, EXCLUDED) for r in scan.records))
    return finetune(scan, plan, run_dir=None, deadline=None).fit


def _add_out_of_fold(
    result: CrossValidation, featured: FeaturedDataset, pool: list[int], probs: np.ndarray
) -> None:
    """Every pooled image was held out exactly once in the first repeat: score those predictions."""
    labels = featured.labels[pool]
    records = [featured.records[i] for i in pool]
    result.out_of_fold = classification_report(labels, probs, featured.classes)
    result.mistakes = confident_mistakes(
        [featured.scan.absolute(r) for r in records],
        [r.path for r in records],
        labels,
        probs,
        featured.classes,
    )


def _write_cv_report(path: Path, result: CrossValidation, featured: FeaturedDataset) -> None:
    rows = [
        [
            str(r["repeat"]),
            str(r["fold"]),
            str(r["n_train"]),
            str(r["n_val"]),
            f"{r['accuracy']:.4f}",
            f"{r['ece']:.4f}",
        ]
        for r in result.per_fold
    ]
    acc = result.summary["accuracy"]
    low, high = acc["ci95"]
    write_report(
        path,
        title=f"imgcls cross-validation: {result.backbone} ({result.head} head) on {featured.scan.name}",
        facts=[
            ("backbone", result.backbone),
            ("head", result.head),
            ("folds x repeats", f"{result.folds} x {result.repeats}"),
            ("accuracy over folds", f"{acc['mean']:.4f} +/- {acc['std']:.4f} (95% CI {low:.4f}-{high:.4f})"),
            ("figures below", "out-of-fold predictions of the first repeat"),
        ],
        report=result.out_of_fold,
        classes=featured.classes,
        mistakes=result.mistakes,
        tables=[("Per fold", ("repeat", "fold", "train", "val", "accuracy", "ECE"), rows)],
    )


@dataclass
class Comparison:
    """Cross-validated candidates (backbones, heads, or both) side by side, on the same folds,
    and a paired test between the best two."""

    results: list[CrossValidation]
    paired_test: dict[str, Any] | None

    def ranked(self) -> list[CrossValidation]:
        return sorted(self.results, key=lambda r: -r.summary["accuracy"]["mean"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidates": [r.to_dict() for r in self.ranked()],
            "paired_test": self.paired_test,
        }


@takes_verbose
def compare(
    data: str | Path,
    backbones: list[str] | None = None,
    output: str | Path | None = None,
    *,
    heads: list[str] | None = None,
    config: TrainConfig | None = None,
    folds: int = FOLDS,
    repeats: int = REPEATS,
    overwrite: bool = False,
    verbose: bool | None = None,
    **settings: Any,
) -> Comparison:
    """Cross-validate every backbone with every head on the same folds; test the best two
    against each other. ``backbones`` and ``heads`` default to the config's one; together they
    must name at least two candidates. ``settings`` are ``TrainConfig`` fields, overriding
    ``config``; ``verbose`` as for ``train``."""
    base = _cv_config(with_settings(config, settings), folds=folds, repeats=repeats)
    backbones = list(dict.fromkeys(backbones or [base.backbone]))  # a name given twice runs once
    heads = list(dict.fromkeys(heads or [base.head]))
    if len(backbones) * len(heads) < 2:
        raise ConfigError(
            f"compare needs at least two different backbones or heads, got {backbones} and {heads}"
        )
    scan = open_source(data, **base.source_options())
    run_dir = prepare_output_dir(Path(output), overwrite=overwrite, data=scan) if output is not None else None
    results = []
    for backbone in backbones:
        started = time.perf_counter()
        cfg = dataclasses.replace(base, backbone=backbone)
        featured = featurize_on_engine(scan, cfg)
        for head in heads:
            name = "/".join(
                part for part, varies in ((backbone, len(backbones) > 1), (head, len(heads) > 1)) if varies
            )
            sub_dir = (
                prepare_output_dir(run_dir / name.replace("/", "-"), overwrite=overwrite) if run_dir else None
            )
            results.append(
                _cross_validate_features(
                    featured,
                    dataclasses.replace(cfg, head=head),
                    folds=folds,
                    repeats=repeats,
                    run_dir=sub_dir,
                    started=started,
                    name=name,
                )
            )
            started = time.perf_counter() - featured.extract_seconds  # the next head reuses the features
    comparison = Comparison(results, None)
    best, second = comparison.ranked()[:2]
    comparison.paired_test = {
        "method": "corrected resampled t-test (Nadeau & Bengio) on per-fold accuracy",
        "a": best.name,
        "b": second.name,
        **corrected_paired_t_test(best.accuracies, second.accuracies, test_train_ratio=1.0 / (folds - 1)),
    }
    if run_dir is not None:
        write_json(run_dir / COMPARE_FILE, comparison.to_dict())
    return comparison
