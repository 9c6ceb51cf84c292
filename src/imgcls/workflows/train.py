"""The workflow behind ``imgcls train`` (and ``imgcls.resume``), as plain functions.

``train`` reads like its recipe: resolve config -> scan data -> plan the run (backbone,
preprocessing, device, strategy, splits) -> extract features -> fit the head (and fine-tune,
calibrate) -> evaluate -> save.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from imgcls._files import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    MODEL_SUBDIR,
    RUN_CONFIG_FILE,
    SKIPPED_FILE,
    SPLITS_FILE,
    read_run_config,
    write_csv_atomic,
    write_json,
)
from imgcls.config import TrainConfig, with_settings
from imgcls.data.records import TEST, TRAIN, VAL, DatasetScan
from imgcls.data.sources import open_source
from imgcls.data.splits import check_splits, split_counts, write_manifest
from imgcls.errors import DataError, ImgclsError, RunInterrupted
from imgcls.evaluation.duplicates import identical_rows, leaks
from imgcls.inference.classifier import Classifier
from imgcls.inference.model_format import versions
from imgcls.system.distributed import Ranks, join
from imgcls.system.profiling import PROFILE
from imgcls.system.progress import takes_verbose
from imgcls.system.wording import count
from imgcls.training._history import write_history
from imgcls.training.checkpoint import load_checkpoint
from imgcls.training.finetune import Finetuned, finetune
from imgcls.training.probe import (
    FeaturedDataset,
    ProbeFit,
    featurize,
    fit_and_score,
    install_head,
)
from imgcls.training.run_plan import RunPlan, plan_run
from imgcls.workflows.ray_extraction import extract_on_ray
from imgcls.workflows.run_summary import write_model_card, write_train_report

log = logging.getLogger(__name__)

# Images the train-time export is checked on: enough to catch a broken export, few enough to
# cost a fraction of a small run.
ONNX_CHECK_IMAGES = 8


@takes_verbose
def train(
    data: str | Path | Any,
    output: str | Path | None = None,
    *,
    config: TrainConfig | None = None,
    overwrite: bool = False,
    verbose: bool | None = None,
    clock_from: float | None = None,
    **settings: Any,
) -> Classifier | None:
    """Train a classifier on labelled images.

    Args:
        data: any source ``imgcls train`` reads (a class folder, with ``train/`` + ``val/`` +
            ``test/`` honoured; a manifest or a pandas DataFrame; CIFAR, ImageNet, shards, a
            Hugging Face data set; see docs/data.md).
        output: run directory to write (model/, metrics.json, report.html, splits.csv, run_config.json,
            skipped.csv, and for fine-tuning history.csv, curves.png and a checkpoint while it
            runs); ``None`` keeps everything in memory.
        config: full settings; ``settings`` override its fields.
        overwrite: allow writing into an existing, non-empty run directory.
        verbose: ``True`` shows progress bars and the notes the CLI prints on standard error;
            ``False`` shows only warnings; ``None`` (default) shows bars in a terminal or
            notebook, and notes where logging is set up.
        clock_from: the ``time.perf_counter()`` reading that ``time_limit`` counts from
            (default: this call); the command line passes its process's start.
        settings: any ``TrainConfig`` field: ``backbone="efficientnet_lite2"``,
            ``strategy="finetune"``, ``epochs=3``, ``seed=1``, ...

    Returns:
        The trained classifier; ``clf.metrics`` holds the validation (and test) metrics. Under
        torchrun, rank 0 returns it and writes the run; the other processes return ``None``.
    """
    started = time.perf_counter()
    cfg = with_settings(config, settings)
    scan = open_source(data, **cfg.source_options())
    ranks = join_ranks(cfg)
    if not ranks.is_main:
        output = None
    created = output is not None and not Path(output).exists()
    run_dir = prepare_output_dir(Path(output), overwrite=overwrite, data=scan) if output is not None else None
    try:
        return _train(scan, cfg, run_dir, ranks, started=started, clock_from=clock_from)
    except KeyboardInterrupt:
        if run_dir is None:
            raise
        raise _interrupted(run_dir, created=created) from None
    except BaseException:
        # A run that failed before writing anything leaves no empty directory behind (one with
        # a checkpoint stays, for --resume).
        if created and run_dir is not None and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise


@takes_verbose
def resume(
    run_dir: str | Path, data: str | Path | None = None, *, verbose: bool | None = None
) -> Classifier | None:
    """Continue an interrupted fine-tuning run from its last checkpoint (same settings and seed).

    ``data`` overrides the data folder recorded in the run (if it moved); ``verbose`` as for
    ``train``. Under torchrun every process reads the checkpoint; rank 0 writes the run and
    returns the classifier.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    saved = read_run_config(run_dir)
    cfg = TrainConfig().with_overrides(saved["train"])
    if cfg.strategy == "probe":
        raise DataError(f"{run_dir} is a probe run; probes are not checkpointed, train it again")
    payload = load_checkpoint(run_dir / CHECKPOINT_FILE)
    scan = open_source(data or saved["data"], **cfg.source_options())
    ranks = join_ranks(cfg)
    try:
        return _train(
            scan, cfg, run_dir if ranks.is_main else None, ranks, started=started, resume_from=payload
        )
    except KeyboardInterrupt:
        if not ranks.is_main:
            raise
        raise _interrupted(run_dir, created=False) from None


def _interrupted(run_dir: Path, *, created: bool) -> RunInterrupted:
    """What Ctrl-C leaves: a run with a checkpoint stays for ``resume``; one this call created
    that holds no checkpoint is removed (its few files cannot be resumed or loaded)."""
    checkpoint = run_dir / CHECKPOINT_FILE
    if checkpoint.is_file():
        try:
            epoch = int(load_checkpoint(checkpoint)["state"]["next_epoch"]) - 1
        except (ImgclsError, KeyError, TypeError, ValueError):
            epoch = None
        return RunInterrupted(run_dir, resumable=True, removed=False, epoch=epoch)
    if created and run_dir.is_dir() and not (run_dir / MODEL_SUBDIR).exists():
        shutil.rmtree(run_dir, ignore_errors=True)
        return RunInterrupted(run_dir, resumable=False, removed=True)
    return RunInterrupted(run_dir, resumable=False, removed=False)


def join_ranks(cfg: TrainConfig) -> Ranks:
    """This process's place under torchrun (``SINGLE`` when started alone)."""
    return join(cfg.device, cfg.dist_timeout)


def _train(
    scan: DatasetScan,
    cfg: TrainConfig,
    run_dir: Path | None,
    ranks: Ranks,
    *,
    started: float,
    clock_from: float | None = None,
    resume_from: dict[str, Any] | None = None,
) -> Classifier | None:
    """The run; ``run_dir`` is ``None`` in memory and on every rank but 0, which alone returns
    the classifier."""
    clock = started if clock_from is None else clock_from
    deadline = clock + cfg.time_limit if cfg.time_limit else None
    plan = plan_run(scan, cfg, ranks)
    if cfg.engine == "ray":
        extract_on_ray(scan, plan)
    tuned = None
    if plan.strategy == "probe":
        if not ranks.is_main:
            featurize(scan, plan)  # this rank's share of the features, for rank 0 to read
            return None
        featured, fit = _probe(scan, plan)
    else:
        tuned = finetune(
            scan,
            plan,
            run_dir=run_dir,
            deadline=deadline,
            resume=resume_from,
            before_training=lambda: _write_resume_config(run_dir, scan, cfg),
        )
        if not ranks.is_main:
            return None
        featured, fit = tuned.featured, tuned.fit
        fit.metrics["finetune"] = tuned.summary()
    warn_of_copies(featured)
    if plan.auto is not None:
        fit.metrics["auto"] = plan.auto
    fit.metrics["timing"] = {
        "extract_s": round(featured.extract_seconds, 2),
        "total_s": round(time.perf_counter() - started, 2),
    }
    clf = Classifier(
        featured.model,
        classes=featured.classes,
        preprocessing=featured.preprocessing,
        config=_model_config(featured, plan, fit, tuned),
    )
    if run_dir is not None:
        with PROFILE.stage("save run (model, metrics, splits)"):
            _save_run(run_dir, clf, featured, cfg, fit.metrics, deadline=deadline)
        if tuned is not None:
            write_history(run_dir, tuned.state.history)
            (run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)  # finished: nothing left to resume
        if cfg.report:
            with PROFILE.stage("report.html"):
                write_train_report(run_dir, featured, fit, clf, with_curves=tuned is not None)
    return clf


def warn_of_copies(featured: FeaturedDataset) -> None:
    """One warning line when the features show identical pictures, and how many of them sit
    in training and in a held-out split at once (which flatters held-out accuracy)."""
    groups = identical_rows(featured.features)
    if not groups:
        return
    leaking = sum(1 for g in groups if leaks(featured.splits[i] for i in g))
    log.warning(
        "%s of identical images (%d in training and a held-out split at once, which flatters held-out "
        "accuracy); `imgcls doctor` lists them, with near copies, likely mislabels and outliers",
        count(len(groups), "group"),
        leaking,
    )


def _write_resume_config(run_dir: Path | None, scan: DatasetScan, cfg: TrainConfig) -> None:
    """What ``resume`` needs, written before the first epoch (the full run config comes at the end)."""
    if run_dir is not None:
        write_json(run_dir / RUN_CONFIG_FILE, {"train": cfg.to_dict(), "data": scan.location})


def _probe(scan: DatasetScan, plan: RunPlan) -> tuple[FeaturedDataset, ProbeFit]:
    featured = featurize(scan, plan)
    check_splits(featured.records, featured.splits, featured.classes)
    log.info("splits: %s", ", ".join(f"{k} {v}" for k, v in split_counts(featured.splits).items()))
    cfg = plan.config
    fit = fit_and_score(
        featured,
        featured.splits,
        seed=plan.seed,
        balanced=cfg.class_weights == "auto",
        calibrate=cfg.calibrate,
        head=cfg.head,
    )
    install_head(featured.model, fit.head)
    return featured, fit


def prepare_output_dir(path: Path, *, overwrite: bool, data: DatasetScan | None = None) -> Path:
    """Create ``path``; refuse a non-empty existing directory unless ``overwrite``, and a
    directory inside the class folders of ``data`` (its files would become a class)."""
    if data is not None and data.format == "folder" and path.resolve().is_relative_to(data.root.resolve()):
        raise DataError(
            f"output {path} is inside the data folder {data.root}: the next run would take it for a "
            "class; choose an `output` outside the data"
        )
    if path.exists() and not path.is_dir():
        raise DataError(f"output {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise DataError(
            f"output directory {path} already exists and is not empty; "
            "choose another `output` or pass `overwrite=True`"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _model_config(
    featured: FeaturedDataset, plan: RunPlan, fit: ProbeFit, tuned: Finetuned | None
) -> dict[str, Any]:
    head = dict(fit.head.summary)
    if tuned is not None:
        head = {
            "type": "finetuned",
            "initial_head_C": fit.head.summary["C"],
            "best_epoch": tuned.state.best_epoch,
        }
    if "calibration" in fit.metrics:
        head["temperature"] = fit.metrics["calibration"]["temperature"]
    return {
        "backbone": {
            "name": featured.spec.name,
            "timm_arch": featured.spec.timm_arch,
            "weights": featured.weights.to_dict(),
        },
        "strategy": "finetune" if tuned is not None else "probe",  # what ran (auto picks one)
        "precision": tuned.plan.precision if tuned else plan.features.precision,
        "finetune": tuned.plan.to_dict() if tuned is not None else None,
        "head": head,
        "seed": plan.seed,
        "metrics": {k: v for k, v in fit.metrics.items() if k in (VAL, TEST, TRAIN, "calibration")},
        "unreadable": featured.unreadable,
    }


def _save_run(
    run_dir: Path,
    clf: Classifier,
    featured: FeaturedDataset,
    cfg: TrainConfig,
    metrics: dict[str, Any],
    *,
    deadline: float | None,
) -> None:
    # The model first and metrics.json last: a run that fails part way (a full disk) never
    # looks finished.
    clf.save(run_dir / MODEL_SUBDIR)
    if cfg.onnx and _time_left_for_export(deadline, cfg.time_limit, run_dir):
        with PROFILE.stage("model.onnx (export and parity check)"):
            write_onnx_export(run_dir, featured)
    write_manifest(run_dir / SPLITS_FILE, featured.records, featured.splits)
    write_skipped(run_dir / SKIPPED_FILE, featured.unreadable)
    write_json(run_dir / RUN_CONFIG_FILE, run_config(featured, cfg))
    write_model_card(run_dir, clf, featured, metrics)
    write_json(run_dir / METRICS_FILE, metrics)
    log.info("saved run to %s", run_dir)


def _time_left_for_export(deadline: float | None, time_limit: float | None, run_dir: Path) -> bool:
    """Whether a time-limited run has room for the export: a tenth of its limit, which covers
    the export of a small network on a slow CPU; a run with less left keeps its limit instead."""
    if deadline is None or time_limit is None or deadline - time.perf_counter() >= 0.1 * time_limit:
        return True
    log.info("model.onnx not written: the time limit leaves no room; `imgcls export %s` writes it", run_dir)
    return False


def write_onnx_export(run_dir: Path, featured: FeaturedDataset) -> None:
    """``model/model.onnx``, checked against torch on held-out images, so that ``predict``
    can answer a few images without importing torch (``runtime_choice``). An exporter that
    fails on an unusual network costs the export, never the trained run."""
    if not all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime")):
        log.debug("model.onnx not written: onnx or onnxruntime is not installed")
        return
    # Held-out images first, taken lazily: the export needs a few, not an order of every image.
    held_out = (i for i, split in enumerate(featured.splits) if split != TRAIN)
    training = (i for i, split in enumerate(featured.splits) if split == TRAIN)
    chosen = itertools.islice(itertools.chain(held_out, training), ONNX_CHECK_IMAGES)
    images = [featured.scan.absolute(featured.records[i]) for i in chosen]
    from imgcls.deploy.export import export_model

    try:
        export_model(run_dir / MODEL_SUBDIR, format="onnx", check_images=images, device="cpu")
    except Exception as exc:  # any exporter failure: the run is already saved
        log.warning(
            "model.onnx not written (%s: %s); predict runs the model in torch, and "
            "`imgcls export %s` shows the details",
            type(exc).__name__,
            exc,
            run_dir,
        )


def run_config(featured: FeaturedDataset, cfg: TrainConfig) -> dict[str, Any]:
    """The resolved settings of a run, enough to reproduce it (``--config`` reads it back)."""
    return {
        "train": cfg.to_dict(),
        "data": featured.scan.location,
        "classes": featured.classes,
        "preprocessing": featured.preprocessing.to_dict(),
        "backbone": {"name": featured.spec.name, "weights": featured.weights.to_dict()},
        "versions": versions(),
    }


def write_skipped(path: Path, unreadable: dict[str, str]) -> None:
    write_csv_atomic(path, ["path", "reason"], sorted(unreadable.items()))
