"""Fitting the probe's classification layer on frozen features: ``linear`` (logistic
regression), ``mlp`` (one hidden layer) or ``knn`` (cosine nearest neighbours).

Each head's settings are chosen on the training split only, and each comes back as the
``nn.Module`` that the network then carries as its classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from imgcls.config import HEADS
from imgcls.errors import ConfigError, DataError
from imgcls.models.heads import linear_layer
from imgcls.system.devices import CPU
from imgcls.training.knn_head import fit_knn_head
from imgcls.training.linear_head import Features, fit_linear_head, row_chunks
from imgcls.training.mlp_head import fit_mlp_head


@dataclass
class FittedHead:
    """A fitted classification layer on raw pooled features, and what was chosen for it.

    ``summary`` goes into the model's config (``head``) and the run's metrics; its ``type``
    and shape fields are what ``models.heads.head_for_config`` rebuilds the layer from.
    """

    kind: str
    layer: nn.Module
    summary: dict[str, Any]

    def logits(self, features: Features) -> np.ndarray:
        """Logits of every row, computed a chunk of rows at a time."""
        self.layer.eval()
        with torch.inference_mode():
            parts = [self.layer(torch.from_numpy(_float32(block))).numpy() for block in row_chunks(features)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    def accuracy(self, features: Features, labels: np.ndarray) -> float:
        """The share of rows whose top class is their label, without holding every row's logits."""
        right, start = 0, 0
        self.layer.eval()
        with torch.inference_mode():
            for block in row_chunks(features):
                predicted = self.layer(torch.from_numpy(_float32(block))).argmax(dim=1).numpy()
                right += int((predicted == labels[start : start + len(block)]).sum())
                start += len(block)
        return right / max(start, 1)


def _float32(block: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(block, dtype=np.float32)


def fit_head(
    kind: str,
    features: Features,
    labels: np.ndarray,
    *,
    num_classes: int,
    seed: int,
    balanced: bool,
    device: torch.device = CPU,
) -> FittedHead:
    """Fit a ``kind`` head (one of ``HEAD_FITTERS``) on ``device``; ``labels`` are class
    indices; ``features`` may be memory-mapped (the linear head reads it a chunk at a time,
    the others whole). The fitted layer is on the CPU."""
    fitter = HEAD_FITTERS.get(kind)
    if fitter is None:
        raise ConfigError(f"unknown `head` {kind!r}; choose one of {', '.join(HEADS)}")
    present = len(np.unique(labels))
    if present != num_classes:
        raise DataError(f"every class needs readable training images; {present} of {num_classes} have some")
    layer, summary = fitter(
        features, labels, num_classes=num_classes, seed=seed, balanced=balanced, device=device
    )
    return FittedHead(kind, layer, summary)


# A fitter: (features, labels, num_classes=, seed=, balanced=, device=) -> (the layer, its
# summary for the saved config, whose ``type`` ``models.heads.SAVED_LAYERS`` rebuilds it by).
HeadFitter = Callable[..., tuple[nn.Module, dict[str, Any]]]


def _fit_linear(features: Features, labels: np.ndarray, **fit: Any) -> tuple[nn.Module, dict[str, Any]]:
    linear = fit_linear_head(features, labels, **fit)
    layer = linear_layer(torch.from_numpy(linear.weight), torch.from_numpy(linear.bias))
    summary = {
        "type": "logistic_regression",
        "C": linear.c,
        "cv_accuracy": {str(k): v for k, v in sorted(linear.cv_accuracy.items())},
        "cv_log_loss": {str(k): v for k, v in sorted(linear.cv_log_loss.items())},
    }
    if linear.grid_note:
        summary["grid_note"] = linear.grid_note
    return layer, summary


def _fit_mlp(features: Features, labels: np.ndarray, **fit: Any) -> tuple[nn.Module, dict[str, Any]]:
    mlp = fit_mlp_head(np.asarray(features), labels, **fit)
    summary = {
        "type": "mlp",
        "hidden": mlp.settings.hidden,
        "dropout": mlp.settings.dropout,
        "steps": mlp.settings.steps,
        "holdout_accuracy": mlp.holdout_accuracy,
    }
    return mlp.layer, summary


def _fit_knn(features: Features, labels: np.ndarray, **fit: Any) -> tuple[nn.Module, dict[str, Any]]:
    knn = fit_knn_head(np.asarray(features), labels, **fit)
    summary = {
        "type": "knn",
        "k": knn.layer.k,
        "bank_size": len(knn.layer.bank),
        "cv_accuracy": {str(k): v for k, v in knn.cv_accuracy.items()},
    }
    return knn.layer, summary


# The probe's head kinds, by their ``--head`` name (``config.HEADS``, which the command line
# reads without importing torch, lists the same names; a test holds the two equal).
HEAD_FITTERS: dict[str, HeadFitter] = {"linear": _fit_linear, "mlp": _fit_mlp, "knn": _fit_knn}
