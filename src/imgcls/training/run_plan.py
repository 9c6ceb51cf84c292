"""The run plan: what a ``train``, ``cv`` or ``compare`` run decides before it reads an image.

``plan_run`` resolves a ``TrainConfig`` once, at the start: the backbone spec and its
preprocessing, the device, the precision of the feature pass, the strategy (``auto``
decided), the feature-extraction settings and the train/val/test split of every image. Each
step then takes what it needs from the plan, so a decision is made in one place and no step
re-derives another's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from imgcls.config import ACCELERATOR_BATCH, TrainConfig
from imgcls.data.preprocessing import Preprocessing
from imgcls.data.records import TRAIN, DatasetScan
from imgcls.data.splits import assign_splits
from imgcls.errors import ConfigError
from imgcls.models.features import default_cache_dir
from imgcls.models.registry import BackboneSpec, get_backbone, resolve_preprocessing
from imgcls.system.devices import CPU, resolve_device
from imgcls.system.distributed import SINGLE, Ranks
from imgcls.system.precision import resolve_precision
from imgcls.training.finetune_plan import choose_strategy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureSettings:
    """How features are computed: the preprocessing, device, numeric precision, batching and cache."""

    preprocessing: Preprocessing
    precision: str
    batch_size: int
    workers: int | None
    cache_dir: Path | None  # None: no disk cache
    device: torch.device = CPU


@dataclass(frozen=True)
class RunPlan:
    """A run's decisions, resolved once (``plan_run``).

    Attributes:
        config: the settings the plan was resolved from (saved with the run).
        spec: the backbone.
        features: how frozen features are computed.
        native_preprocessing: the backbone's pretraining resolution, for training on images.
        device: where gradient training runs (this rank's GPU under torchrun).
        ranks: this process's place among torchrun's processes (``SINGLE`` when alone).
        strategy: ``probe`` or ``finetune`` (``auto`` decided).
        auto: for ``auto``, what it chose and why.
        splits: the split of each image of the scan, in scan order (``train``, ``val``,
            ``test``); unreadable images are dropped from it later, never reassigned.
    """

    config: TrainConfig
    spec: BackboneSpec
    features: FeatureSettings
    native_preprocessing: Preprocessing
    device: torch.device
    strategy: str
    auto: dict[str, str] | None
    splits: tuple[str, ...]
    ranks: Ranks = SINGLE

    @property
    def weights(self) -> str | None:
        """A weights file, if one was given (else the backbone's pretrained weights)."""
        return self.config.weights

    @property
    def pretrained(self) -> bool:
        return self.config.pretrained

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def preprocessing(self) -> Preprocessing:
        """The feature preprocessing: the one saved with the model."""
        return self.features.preprocessing


def plan_run(scan: DatasetScan, cfg: TrainConfig, ranks: Ranks = SINGLE) -> RunPlan:
    """Resolve ``cfg`` for ``scan`` once: every later step reads its decisions from the result."""
    spec = get_backbone(cfg.backbone)
    device = resolve_device(cfg.device)
    if ranks.active:
        if cfg.engine != "local":
            raise ConfigError(
                "torchrun and `engine=ray` each spread the feature extraction: start one process "
                "with `engine=ray`, or torchrun without it"
            )
        if not cfg.use_cache:
            raise ConfigError(
                "under torchrun the processes share their features through the feature cache: drop "
                "`use_cache=False` (several nodes need a `cache_dir` on a file system they share)"
            )
        if device.type == "cuda":
            device = torch.device("cuda", ranks.local_rank)
    splits = tuple(
        assign_splits(
            scan.records, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed
        )
    )
    strategy, auto = cfg.strategy, None
    if strategy == "auto":
        n_train = sum(s == TRAIN for s in splits)
        strategy, reason = choose_strategy(n_train, device, cfg.time_limit)
        if cfg.head != "linear":
            strategy, reason = "probe", f"the {cfg.head} head is fitted on frozen features"
        log.info("strategy auto -> %s: %s", strategy, reason)
        auto = {"strategy": strategy, "reason": reason}
        if cfg.compile and strategy == "probe":
            log.warning("compile: not used, the probe trains no network")
    features = FeatureSettings(
        preprocessing=resolve_preprocessing(spec, input_size=cfg.input_size),
        precision=resolve_precision(cfg.precision, device),
        batch_size=cfg.batch_size if device.type == "cpu" else max(cfg.batch_size, ACCELERATOR_BATCH),
        workers=cfg.workers,
        cache_dir=(Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()) if cfg.use_cache else None,
        device=device,
    )
    return RunPlan(
        config=cfg,
        spec=spec,
        features=features,
        native_preprocessing=resolve_preprocessing(spec, input_size=cfg.input_size, for_features=False),
        device=device,
        strategy=strategy,
        auto=auto,
        splits=splits,
        ranks=ranks,
    )
