"""A one-hidden-layer MLP head on frozen features: width, dropout and the number of training
steps chosen on a held-out part of the training split, then refitted on all of it.

Training runs for a number of optimiser steps rather than epochs: a small data set needs many
passes over its few batches, a large one few passes over many.

Features are standardised for training and the scaling is folded into the first layer, so
the saved head reads raw pooled features as the linear one does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from imgcls.data.splits import stratified_folds
from imgcls.models.heads import MLPHead
from imgcls.system.devices import CPU, place
from imgcls.training._inner_cv import class_weights, fold_score

log = logging.getLogger(__name__)

WIDTHS = (128, 512)
DROPOUTS = (0.0, 0.5)
BATCH_SIZE = 128
EPOCHS = 40  # passes over the data searched, within the step bounds below
MIN_STEPS, MAX_STEPS = 500, 2000
CHECKS = 25  # holdout scores along the way; the best of them sets the step count
LR = 1e-3
WEIGHT_DECAY = 1e-4
HOLDOUT_FOLDS = 5  # one fold of five (20% of train) judges the candidates


@dataclass(frozen=True)
class MLPSettings:
    hidden: int
    dropout: float
    steps: int


@dataclass
class MLPFit:
    layer: MLPHead
    settings: MLPSettings
    holdout_accuracy: dict[str, float]  # best score of each candidate ("512/0.5")


def fit_mlp_head(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    seed: int,
    balanced: bool,
    device: torch.device = CPU,
) -> MLPFit:
    """The MLP head fitted on all of ``features`` with the settings its holdout chose; it
    trains on ``device`` and comes back on the CPU."""
    mean = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6
    x = place(torch.from_numpy(((features - mean) / scale).astype(np.float32)), device)
    y = place(torch.from_numpy(labels), device)
    weight = place(torch.from_numpy(class_weights(labels, num_classes)).float(), device) if balanced else None
    holdout = _holdout(labels, seed)
    scores: dict[str, float] = {}
    settings = MLPSettings(WIDTHS[-1], DROPOUTS[-1], _step_budget(len(labels)) // 2)
    if holdout is not None:
        settings, scores = _choose(x, y, holdout, num_classes=num_classes, seed=seed, weight=weight)
    log.info(
        "MLP head: %d hidden units, dropout %.1f, %d steps (chosen on %s)",
        settings.hidden,
        settings.dropout,
        settings.steps,
        "20% of train held out" if holdout is not None else "defaults: a class is too small to hold out",
    )
    layer, _ = _train(x, y, settings, num_classes=num_classes, seed=seed, weight=weight)
    layer = place(layer, CPU)
    _fold_standardisation(layer, mean, scale)
    return MLPFit(layer.eval(), settings, scores)


def _step_budget(n: int) -> int:
    return int(np.clip(EPOCHS * np.ceil(n / BATCH_SIZE), MIN_STEPS, MAX_STEPS))


def _holdout(labels: np.ndarray, seed: int) -> np.ndarray | None:
    folds = min(HOLDOUT_FOLDS, int(np.bincount(labels).min()))
    if folds < 2:
        return None
    return np.array(stratified_folds(labels.tolist(), folds=folds, seed=seed)) == 0


def _choose(
    x: torch.Tensor,
    y: torch.Tensor,
    holdout: np.ndarray,
    *,
    num_classes: int,
    seed: int,
    weight: torch.Tensor | None,
) -> tuple[MLPSettings, dict[str, float]]:
    """Train every candidate on the rest of train; the (candidate, step count) best on the
    holdout. Ties go to the earlier candidate (narrower, less dropout) and the fewer steps."""
    held, kept = place(torch.from_numpy(holdout), x.device), place(torch.from_numpy(~holdout), x.device)
    budget = _step_budget(int(kept.sum()))
    every = max(1, budget // CHECKS)
    best: tuple[float, MLPSettings] | None = None
    scores: dict[str, float] = {}
    for hidden in WIDTHS:
        for dropout in DROPOUTS:
            candidate = MLPSettings(hidden, dropout, budget)
            _, curve = _train(
                x[kept],
                y[kept],
                candidate,
                num_classes=num_classes,
                seed=seed,
                weight=weight,
                judge=(x[held], y[held], every),
            )
            check = int(np.argmax(curve))  # the first of equal maxima
            scores[f"{hidden}/{dropout}"] = curve[check]
            if best is None or curve[check] > best[0] + 1e-12:
                # the same number of passes over the larger refit set
                steps = round((check + 1) * every * len(x) / int(kept.sum()))
                best = (curve[check], MLPSettings(hidden, dropout, steps))
    assert best is not None
    return best[1], scores


def _train(
    x: torch.Tensor,
    y: torch.Tensor,
    settings: MLPSettings,
    *,
    num_classes: int,
    seed: int,
    weight: torch.Tensor | None,
    judge: tuple[torch.Tensor, torch.Tensor, int] | None = None,
) -> tuple[MLPHead, list[float]]:
    """``settings.steps`` AdamW steps; with ``judge`` (features, labels, every), the score on
    them after every ``every`` steps."""
    balanced = weight is not None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = place(MLPHead(x.shape[1], settings.hidden, num_classes, settings.dropout), x.device)
        optimiser = torch.optim.AdamW(layer.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        curve: list[float] = []
        layer.train()
        for step, batch in enumerate(_batches(len(x), settings.steps, seed), start=1):
            optimiser.zero_grad(set_to_none=True)
            F.cross_entropy(layer(x[batch]), y[batch], weight=weight).backward()
            optimiser.step()
            if judge is not None and step % judge[2] == 0:
                layer.eval()
                with torch.inference_mode():
                    predicted = layer(judge[0]).argmax(-1).cpu().numpy()
                curve.append(
                    fold_score(judge[1].cpu().numpy(), predicted, num_classes=num_classes, balanced=balanced)
                )
                layer.train()
    return layer, curve


def _batches(n: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    """``steps`` mini-batches of indices: seeded shuffled passes over ``range(n)``."""
    order = torch.Generator().manual_seed(seed)
    done = 0
    while True:
        for batch in torch.randperm(n, generator=order).split(BATCH_SIZE):
            if done == steps:
                return
            done += 1
            yield batch


def _fold_standardisation(layer: MLPHead, mean: np.ndarray, scale: np.ndarray) -> None:
    """``first((f - mean) / scale)`` == ``first'(f)`` with ``W' = W / scale``, ``b' = b - W' mean``."""
    first = layer[0]
    with torch.no_grad():
        first.weight /= torch.from_numpy(scale.astype(np.float32))
        first.bias -= first.weight @ torch.from_numpy(mean.astype(np.float32))
