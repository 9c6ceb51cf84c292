"""The fine-tune strategy: the probe's head as the starting point, then gradient training.

1. Featurise as the probe does, but keep the trunk's activation maps when only the top
   stages will train (``activations`` mode), so each epoch costs only the top's passes.
2. Fit the logistic head on the frozen features (the probe): the new head starts trained,
   and the probe is candidate "epoch 0", so fine-tuning never ends worse on validation.
3. Train with AdamW, layer-wise lr decay, warm-up + cosine, label smoothing, dropout and
   drop-path, optional class weights and mixed precision; early stopping keeps the best
   epoch; a checkpoint after every epoch makes ``--resume`` exact.
4. Keep whichever scores best on validation: the trained weights, or a point on the straight
   line from the start to them (``weight_interpolation``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from imgcls._files import CHECKPOINT_FILE
from imgcls.data.records import TEST, TRAIN, VAL, DatasetScan
from imgcls.data.splits import check_splits
from imgcls.data.transforms import batch_mixer, eval_transform, train_transform
from imgcls.errors import DataError
from imgcls.models._batchnorm_fold import fold_batchnorm
from imgcls.models._network_split import NetworkSplit, split_network, stage_count
from imgcls.models.heads import fold_temperature
from imgcls.system.devices import CPU, loader_workers, place
from imgcls.system.precision import autocast
from imgcls.system.profiling import PROFILE
from imgcls.system.wording import count
from imgcls.training._fast_path import depthwise_unit_parameters, training_fast_path
from imgcls.training._interpolation import interpolated, snapshot
from imgcls.training._loop import (
    LoopSettings,
    LoopState,
    Optimisation,
    resume_training,
    run_training,
    warmup_cosine,
)
from imgcls.training._tasks import ActivationTask, ImageTask, LabelledRows
from imgcls.training.finetune_plan import DROP_RATES, FinetunePlan, plan_finetune, resolve_unfreeze
from imgcls.training.probe import (
    FeaturedDataset,
    ProbeFit,
    build_model,
    extract_for,
    featured_dataset,
    fit_and_score,
    install_head,
    score_splits,
)
from imgcls.training.run_plan import RunPlan

log = logging.getLogger(__name__)

# Points between the start (the probe) and the trained weights scored on validation; 1.0
# (the trained weights) is the other candidate. See ``weight_interpolation``.
INTERPOLATION_ALPHAS = (0.5, 0.75)

# Below this many validation images one image moves accuracy by a percent or more, about the
# gain a fine-tune usually makes over the probe: the choice between them is mostly noise.
SMALL_VAL = 100
# Fewer training images per class than this rarely fine-tune past the probe.
SMALL_TRAIN_PER_CLASS = 10


@dataclass
class Finetuned:
    featured: FeaturedDataset
    splits: list[str]
    fit: ProbeFit  # metrics of the fine-tuned model; ``head`` is the probe head it started from
    plan: FinetunePlan
    state: LoopState
    interpolation: dict[str, Any] | None = None  # the alpha kept, and each one's val accuracy

    def summary(self) -> dict[str, Any]:
        """What ``metrics.json`` records about the fine-tuning."""
        return {
            "plan": self.plan.to_dict(),
            "stopped": self.state.stopped,
            "best_epoch": self.state.best_epoch,
            "epochs_trained": max((r.epoch for r in self.state.history), default=0),
            "probe": self.fit.metrics.get("probe", {}),
            "interpolation": self.interpolation,
        }


def finetune(
    scan: DatasetScan,
    plan: RunPlan,
    *,
    run_dir: Path | None,
    deadline: float | None,
    resume: dict[str, Any] | None = None,
    before_training: Callable[[], None] | None = None,
) -> Finetuned:
    """Run the strategy on ``scan`` as ``plan`` says; ``before_training`` is called once the
    data and model are ready, just before the first epoch (the API writes what ``resume``
    needs there)."""
    cfg, device = plan.config, plan.device
    model, info = build_model(plan, num_classes=len(scan.classes), options=DROP_RATES)
    trainable = resolve_unfreeze(cfg.unfreeze, device, stage_count(model))
    split = split_network(model, trainable) if trainable is not None else None
    maps = None
    if split is not None:
        extraction = extract_for(
            model, scan, plan.features, embed=split.trunk, output=f"trunk-{trainable}", ranks=plan.ranks
        )
        maps = torch.from_numpy(extraction.features)
        with PROFILE.stage("pool cached maps (probe features)"):
            extraction.features = _pooled(split, maps, plan.features.precision)
    else:
        extraction = extract_for(model, scan, plan.features, ranks=plan.ranks)
    featured = featured_dataset(scan, plan, model, info, extraction)
    splits = featured.splits
    check_splits(featured.records, splits, featured.classes)
    balanced = cfg.class_weights == "auto"
    probe = fit_and_score(featured, splits, seed=plan.seed, balanced=balanced, calibrate=False)
    install_head(model, probe.head)
    # Every rank fitted the same probe; rank 0's is the one all of them start from.
    plan.ranks.broadcast_module(model, "sharing the probe head")
    rows = _rows(featured, splits)
    _warn_small_splits(rows, len(featured.classes))
    tuning = plan_finetune(
        cfg, n_train=len(rows.train), device=device, trainable=trainable, precision=plan.features.precision
    )
    task = _task(featured, split, maps, rows, tuning, plan)
    steps = tuning.epochs * task.num_batches()
    with PROFILE.stage("optimiser set-up (imports timm)"):
        opt = _optimisation(model, task.module, tuning, rows, featured, balanced=balanced, steps=steps)
    settings = LoopSettings(
        epochs=tuning.epochs,
        patience=tuning.patience,
        seed=plan.seed,
        device=device,
        autocast_dtype=tuning.train_autocast_dtype,
        deadline=deadline,
        # After the last epoch: a validation pass per interpolation point, then every split scored.
        finishing_passes=len(INTERPOLATION_ALPHAS) + len(featured.records) / max(len(rows.val), 1),
        show_progress=plan.ranks.is_main,
        checkpoint=run_dir / CHECKPOINT_FILE if run_dir is not None else None,
        ranks=plan.ranks,
        compile=cfg.compile,
    )
    if before_training is not None:
        before_training()
    place(model, device)
    start = snapshot(task.module.state_dict())  # the probe: one end of the interpolation
    with training_fast_path(task.module, _example(task, featured, device)) as fast:
        log.debug("training fast path: %s", fast)
        state = resume_training(task, opt, settings, resume) if resume else run_training(task, opt, settings)
        with PROFILE.stage("weight interpolation"):
            interpolation = _interpolate_toward_start(task, start, state)
        with PROFILE.stage("score every split"):
            fit = _score(featured, splits, task, probe, calibrate=cfg.calibrate)  # on the training device
    place(model, CPU)  # saved and scored later from host memory
    if state.best_epoch == 0 and len(rows.val) and plan.ranks.is_main:
        log.warning("no epoch beat the probe on validation; the probe is saved")
    fit.metrics["probe"] = {s: _brief(probe.metrics[s]) for s in (VAL, TEST) if s in probe.metrics}
    return Finetuned(featured, splits, fit, tuning, state, interpolation)


def _warn_small_splits(rows: LabelledRows, num_classes: int) -> None:
    n_val, per_class = len(rows.val), len(rows.train) / max(num_classes, 1)
    if 0 < n_val < SMALL_VAL:
        log.warning(
            "validation has only %s (one image is %.1f%% of accuracy): too few to tell the "
            "fine-tune from the probe it starts from; a larger `val_fraction` or `imgcls cv` tells more",
            count(n_val, "image"),
            100.0 / n_val,
        )
    if per_class < SMALL_TRAIN_PER_CLASS:
        log.warning(
            "training has only %.0f images per class: fine-tuning this few rarely beats the probe",
            per_class,
        )


def _interpolate_toward_start(
    task: ActivationTask | ImageTask, start: dict[str, torch.Tensor], state: LoopState
) -> dict[str, Any] | None:
    """Leave in ``task.module`` the best on validation of the trained weights and the points
    ``INTERPOLATION_ALPHAS`` of the way from the start to them (``weight_interpolation``);
    ``None`` when training kept the start or there is no validation split."""
    if state.best_epoch <= 0 or state.best_score is None:
        return None
    end = snapshot(task.module.state_dict())
    scores = {1.0: state.best_score}
    for alpha in INTERPOLATION_ALPHAS:
        task.module.load_state_dict(interpolated(start, end, alpha))
        validation = task.validate()
        if validation is None:
            task.module.load_state_dict(end)
            return None
        scores[alpha] = (validation.accuracy, -validation.loss)
    chosen = max(scores, key=lambda a: (scores[a], a))  # ties go to the larger step
    task.module.load_state_dict(end if chosen == 1.0 else interpolated(start, end, chosen))
    log.info(
        "weight interpolation from the probe: %s; kept alpha %.2f",
        ", ".join(f"alpha {a:.2f} val {scores[a][0]:.4f}" for a in sorted(scores)),
        chosen,
    )
    return {"alpha": chosen, "val_accuracy": {f"{a:.2f}": scores[a][0] for a in sorted(scores)}}


def _pooled(split: NetworkSplit, maps: torch.Tensor, precision: str, batch: int = 128) -> np.ndarray:
    """The frozen network's pooled features from the cached activation maps, computed as a
    prediction computes them (BatchNorms folded, the extraction's precision): the probe head
    fitted on them then scores here as the saved model scores in ``predict`` and ``evaluate``."""
    if not len(maps):
        return np.zeros((0, 0), dtype=np.float32)
    split.top.eval()
    top, _ = fold_batchnorm(split.top, maps[:1].float().contiguous(memory_format=torch.channels_last))
    with torch.inference_mode(), autocast(precision):
        parts = [
            top.pooled(maps[i : i + batch].float().contiguous(memory_format=torch.channels_last))
            for i in range(0, len(maps), batch)
        ]
    return torch.cat(parts).float().numpy()


def _example(
    task: ActivationTask | ImageTask, featured: FeaturedDataset, device: torch.device
) -> torch.Tensor:
    """One input of the trained module, for checking the fast path's output."""
    if isinstance(task, ActivationTask):
        example = task.maps[:1].float()
    else:
        side = featured.preprocessing.input_size
        example = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    return place(example, device).contiguous(memory_format=torch.channels_last)


def _rows(featured: FeaturedDataset, splits: list[str]) -> LabelledRows:
    index = {
        s: torch.tensor([i for i, x in enumerate(splits) if x == s], dtype=torch.long) for s in (TRAIN, VAL)
    }
    return LabelledRows(torch.from_numpy(featured.labels), index[TRAIN], index[VAL])


def _task(
    featured: FeaturedDataset,
    split: NetworkSplit | None,
    maps: torch.Tensor | None,
    rows: LabelledRows,
    plan: FinetunePlan,
    run: RunPlan,
) -> ActivationTask | ImageTask:
    num_classes = len(featured.classes)
    if split is not None and maps is not None:
        split.trunk.requires_grad_(False)
        return ActivationTask(
            split.top,
            maps,
            rows,
            num_classes=num_classes,
            batch_size=plan.batch_size,
            augment=plan.augment,
            precision=plan.precision,
            device=run.device,
            ranks=run.ranks,
        )
    paths = [featured.scan.absolute(r) for r in featured.records]
    labels = featured.labels.tolist()
    native = run.native_preprocessing
    return ImageTask(
        featured.model,
        ([paths[i] for i in rows.train], [labels[i] for i in rows.train]),
        ([paths[i] for i in rows.val], [labels[i] for i in rows.val]),
        transforms=(train_transform(native, plan.augment), eval_transform(featured.preprocessing)),
        mixer=batch_mixer(plan.augment, num_classes),
        num_classes=num_classes,
        batch_size=plan.batch_size,
        workers=loader_workers(run.features.workers, len(rows.train), run.device, inline_below=0),
        min_side=featured.preprocessing.resize_size,
        device=run.device,
        precision=plan.precision,
        ranks=run.ranks,
        seed=run.seed,
    )


def _optimisation(
    model: nn.Module,
    trained: nn.Module,
    plan: FinetunePlan,
    rows: LabelledRows,
    featured: FeaturedDataset,
    *,
    balanced: bool,
    steps: int,
) -> Optimisation:
    """AdamW over layer-wise-decayed groups of the trained parameters, warm-up + cosine."""
    from timm.optim import param_groups_layer_decay

    frozen = [] if plan.train_depthwise else depthwise_unit_parameters(trained)
    # ``trained`` may hold the frozen trunk (a split network's top reaches the whole model for its
    # head); ``_task`` has switched the trunk's gradients off.
    trained_ids = {id(p) for p in trained.parameters() if p.requires_grad} - {id(p) for p in frozen}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in trained_ids)
    no_decay = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    groups = param_groups_layer_decay(model, plan.weight_decay, no_decay, layer_decay=plan.layer_decay)
    for group in groups:
        group["lr"] = plan.lr * group.pop("lr_scale", 1.0)
    optimizer = torch.optim.AdamW(groups, lr=plan.lr)
    warmup = max(1, int(plan.warmup_fraction * steps))
    factors = [_group_factor(g, plan, steps, warmup, model) for g in optimizer.param_groups]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
    weights = _class_weights(rows, len(featured.classes)) if balanced else None
    scaler = torch.amp.GradScaler(plan.device) if plan.train_precision == "fp16" else None

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        w = weights.to(logits.device) if weights is not None else None
        return F.cross_entropy(logits, targets, weight=w, label_smoothing=plan.label_smoothing)

    return Optimisation(optimizer, scheduler, loss, scaler)


def _group_factor(group: dict, plan: FinetunePlan, steps: int, warmup: int, model: nn.Module) -> Any:
    """Warm-up + cosine; the body's groups stay at zero for the first ``freeze_epochs``."""
    schedule = warmup_cosine(steps, warmup)
    head = {id(p) for p in model.get_classifier().parameters()}
    if not plan.freeze_epochs or all(id(p) in head for p in group["params"]):
        return schedule
    frozen_steps = steps * plan.freeze_epochs // plan.epochs
    return lambda step: 0.0 if step < frozen_steps else schedule(step)


def _class_weights(rows: LabelledRows, num_classes: int) -> torch.Tensor:
    """Inverse class frequency on the training rows, mean 1 over the images."""
    counts = torch.bincount(rows.labels[rows.train], minlength=num_classes).float()
    if (counts == 0).any():
        raise DataError("`class_weights=auto` needs training images of every class")
    return len(rows.train) / (num_classes * counts)


def _score(
    featured: FeaturedDataset,
    splits: list[str],
    task: ActivationTask | ImageTask,
    probe: ProbeFit,
    *,
    calibrate: bool,
) -> ProbeFit:
    """Metrics of the trained network on every split (and its temperature, with ``calibrate``)."""
    masks = {s: np.array([x == s for x in splits], dtype=bool) for s in (TRAIN, VAL, TEST)}
    logits = {s: _logits(task, featured, m) for s, m in masks.items() if m.any()}
    labels = {split: featured.labels[masks[split]] for split in logits}
    metrics, probs, temperature = score_splits(logits, labels, featured.classes, calibrate=calibrate)
    if temperature is not None:
        fold_temperature(featured.model.get_classifier(), temperature)
    return ProbeFit(probe.head, metrics, masks, probs)


def _logits(task: ActivationTask | ImageTask, featured: FeaturedDataset, mask: np.ndarray) -> np.ndarray:
    if isinstance(task, ActivationTask):
        return task.logits(torch.from_numpy(np.flatnonzero(mask))).numpy()
    paths = [featured.scan.absolute(r) for r, keep in zip(featured.records, mask, strict=True) if keep]
    return task.logits(paths).numpy()


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report[k] for k in ("accuracy", "balanced_accuracy", "n") if k in report}
