"""Resolving ``--strategy finetune`` settings: device, precision, what to unfreeze, and the
defaults that depend on the data size. Everything resolved here is saved with the run."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import torch

from imgcls.config import TrainConfig, parse_unfreeze
from imgcls.errors import ConfigError
from imgcls.system.precision import autocast_dtype
from imgcls.system.wording import count

log = logging.getLogger(__name__)

# On a CPU, "auto" trains the last three stages on cached activations: the most a CPU trains
# in a few minutes, and more stages scored no better on validation (docs/performance.md). On a
# GPU, everything.
CPU_AUTO_STAGES = 3
WEIGHT_DECAY = 0.05
LAYER_DECAY = 0.75
# Stochastic depth while fine-tuning (inert in eval). No dropout before the classifier: the head
# starts fitted on uncentred features, where dropout noise scales with the features' means
# rather than their spread, so the first epoch throws away what the probe learnt.
DROP_RATES = {"drop_rate": 0.0, "drop_path_rate": 0.1}


@dataclass(frozen=True)
class FinetunePlan:
    """The resolved recipe of one fine-tuning run."""

    device: str
    precision: str  # of every forward pass that scores: features, validation, the saved model
    train_precision: str  # of the training steps (the same; kept for saved configs that read it)
    mode: str  # "activations" (cached trunk, train the top) or "images" (train on decoded images)
    trainable_stages: int | None  # None: every stage
    epochs: int
    lr: float
    batch_size: int
    patience: int
    freeze_epochs: int
    augment: str
    train_depthwise: bool = True  # False: depthwise kernels (and their BatchNorms) stay pretrained
    weight_decay: float = WEIGHT_DECAY
    layer_decay: float = LAYER_DECAY
    warmup_fraction: float = 0.1
    label_smoothing: float = 0.1
    drop_rate: float = DROP_RATES["drop_rate"]
    drop_path_rate: float = DROP_RATES["drop_path_rate"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def train_autocast_dtype(self) -> torch.dtype | None:
        return autocast_dtype(self.train_precision)


def trains_depthwise(device: torch.device) -> bool:
    """On a CPU, depthwise kernels and the BatchNorm right after each keep their pretrained
    values; pointwise convolutions, the other BatchNorms and the head train. Their gradients
    are the slowest part of a CPU step (oneDNN's depthwise backward pass costs many times its
    forward), and freezing them cost no accuracy in the measurements on docs/performance.md."""
    return device.type != "cpu"


def resolve_unfreeze(value: str, device: torch.device, stages: int | None) -> int | None:
    """How many stages to train (``None``: all). ``stages`` is ``None`` for networks that cannot be split."""
    count = parse_unfreeze(value)
    if count == 0:  # auto
        count = None if device.type != "cpu" or stages is None else min(CPU_AUTO_STAGES, stages)
    if count is not None and stages is None:
        raise ConfigError(
            f"`unfreeze={value}` needs a network imgcls can cut into stages (EfficientNet, ResNet); "
            "use `unfreeze=all` for this backbone"
        )
    if count is not None and stages is not None and count >= stages:
        return None
    return count


AUTO_MIN_TRAIN = 1000  # images; below this a probe at the raised feature resolution wins
# Least time limit (s) under which a fine-tune is worth starting: a GPU's epochs take seconds;
# a CPU first caches the trunk's maps (about a probe's time) and then needs its epochs.
AUTO_MIN_SECONDS = {"cpu": 600.0, "other": 120.0}


def choose_strategy(n_train: int, device: torch.device, time_limit: float | None) -> tuple[str, str]:
    """``--strategy auto``: ``(strategy, reason)``.

    With thousands of training images the CPU fine-tune (last three stages on cached maps,
    weight interpolation) beats the probe by points for a few times the probe's time; with a
    few hundred no epoch beats the probe on validation (docs/performance.md). So a fine-tune
    from ``AUTO_MIN_TRAIN`` training images, when the time limit leaves room for
    it; it starts from the probe, which stays the answer if no epoch beats it on validation.
    """
    kind = "cpu" if device.type == "cpu" else "other"
    if n_train < AUTO_MIN_TRAIN:
        return "probe", f"{n_train} training images (< {AUTO_MIN_TRAIN}): too few to gain from fine-tuning"
    if time_limit is not None and time_limit < AUTO_MIN_SECONDS[kind]:
        return "probe", (
            f"a time limit of {time_limit:.0f} s leaves no room for fine-tuning epochs on "
            f"{device.type} (needs {AUTO_MIN_SECONDS[kind]:.0f} s)"
        )
    what = "the last stages on cached activations" if device.type == "cpu" else "every stage"
    return "finetune", f"{device.type} with {n_train} training images: fine-tune {what}"


def default_patience(epochs: int) -> int:
    """Without ``--patience`` every epoch runs (and the best one is kept).

    Under warm-up + cosine the first epochs at the peak learning rate fall below the fitted
    probe on validation, and the gains come as the rate decays, so early stopping with a small
    patience would stop before the gains and keep the probe.
    """
    return epochs


def default_epochs(n_train: int, mode: str) -> int:
    """Fewer passes over larger data sets; cached-activation epochs are cheap, so more of them."""
    if mode == "activations":
        return 12 if n_train <= 5000 else 8 if n_train <= 20000 else 5
    return 10 if n_train <= 2000 else 6 if n_train <= 20000 else 4


def default_lr(mode: str, batch_size: int) -> float:
    """AdamW peak learning rate of the top stage, scaled linearly with the batch size."""
    base = 2e-4 if mode == "activations" else 3e-4
    return base * batch_size / 32


def plan_finetune(
    cfg: TrainConfig, *, n_train: int, device: torch.device, trainable: int | None, precision: str
) -> FinetunePlan:
    """The fine-tune's recipe from ``cfg``'s settings, the data's size and what the run has
    already resolved: ``trainable`` stages (``resolve_unfreeze``, once the network is built)
    and the ``precision`` features are scored in (the run plan's), which training keeps."""
    mode = "activations" if trainable is not None else "images"
    epochs = cfg.epochs or default_epochs(n_train, mode)
    plan = FinetunePlan(
        device=device.type,
        precision=precision,
        train_precision=precision,
        mode=mode,
        trainable_stages=trainable,
        epochs=epochs,
        lr=cfg.lr or default_lr(mode, cfg.batch_size),
        batch_size=cfg.batch_size,
        patience=cfg.patience or default_patience(epochs),
        freeze_epochs=cfg.freeze_epochs,
        augment=cfg.augment,
        label_smoothing=cfg.label_smoothing,
        train_depthwise=trains_depthwise(device),
    )
    log.info(
        "fine-tune plan: %s, %s (training steps %s), train %s, %s, lr %.1e, augment %s",
        plan.device,
        plan.precision,
        plan.train_precision,
        f"the last {trainable} stages on cached activations" if trainable else "every stage on images",
        count(plan.epochs, "epoch"),
        plan.lr,
        plan.augment,
    )
    return plan
