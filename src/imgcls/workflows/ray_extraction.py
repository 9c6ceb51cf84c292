"""Probe features computed on a Ray cluster (``--engine ray`` for ``train``, ``cv``, ``compare``).

The run's own network (built as the run builds it, so the features fall in the same
feature-cache space) goes to a pool of Ray actors; they write what they compute into the
feature cache, and the run's extraction then finds every feature there. Unreadable files are
left for the run to report as it always does.
"""

from __future__ import annotations

import logging

import torch

from imgcls.config import TrainConfig
from imgcls.data.records import DatasetScan
from imgcls.deploy.ray_engine import RayEmbedding
from imgcls.errors import ConfigError
from imgcls.inference.encoder import Encoder
from imgcls.system.progress import Progress
from imgcls.training.probe import FeaturedDataset, build_model, featurize
from imgcls.training.run_plan import RunPlan, plan_run

log = logging.getLogger(__name__)

CHUNK = 1024  # files per result the driver takes at a time (progress granularity)


def featurize_on_engine(scan: DatasetScan, cfg: TrainConfig) -> FeaturedDataset:
    """``featurize`` with the planned run, its features computed where ``cfg.engine`` says."""
    plan = plan_run(scan, cfg)
    if cfg.engine == "ray":
        extract_on_ray(scan, plan)
    return featurize(scan, plan)


def extract_on_ray(scan: DatasetScan, plan: RunPlan) -> None:
    """Put the probe features of every image of ``scan`` into the plan's feature cache, on Ray."""
    if plan.strategy != "probe":
        raise ConfigError(
            "`engine=ray` computes probe features; a fine-tune computes its own where it trains "
            "(spread it over processes with torchrun)"
        )
    if plan.features.cache_dir is None:
        raise ConfigError(
            "`engine=ray` hands the features over through the feature cache: drop `use_cache=False` "
            "(and give a `cache_dir` that the cluster's nodes share)"
        )
    cfg = plan.config
    model, _ = build_model(plan, num_classes=len(scan.classes))
    origin = {"model": plan.spec.name, "weights": cfg.weights, "input_size": cfg.input_size}
    # The actors compute on the kind of device the run would (their features share its cache
    # space); Ray gives each GPU actor a GPU of its own, seen as its first.
    encoder = Encoder(
        model,
        plan.preprocessing,
        plan.features.precision,
        {**origin, "backbone": plan.spec.name},
        device=torch.device(plan.features.device.type),
    )
    engine = RayEmbedding(
        encoder,
        cache_dir=plan.features.cache_dir,
        address=cfg.ray_address,
        actors=cfg.ray_actors,
        batch_size=plan.features.batch_size,
    )
    paths = [scan.absolute(r) for r in scan.records]
    progress = Progress("extracting features on Ray")
    done = computed = unreadable = 0
    for extraction in engine(paths, CHUNK):
        done += len(extraction.readable)
        computed += extraction.computed
        unreadable += len(extraction.failures)
        progress(done, len(paths))
    log.info(
        "features on Ray: %d computed, %d found in the cache, %d unreadable",
        computed,
        done - computed - unreadable,
        unreadable,
    )
