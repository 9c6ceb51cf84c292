"""Scoring image files with a classifier: class probabilities per test-time view, through the
backbone's pooled features so that the feature cache serves repeated scoring of the same images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from imgcls.data.transforms import TTA_VIEWS, view_settings
from imgcls.models.features import FeatureCache, extract_features, feature_space

if TYPE_CHECKING:
    from imgcls.inference.classifier import Classifier


@dataclass
class Scores:
    """Per-view class probabilities of the readable images, and why the others failed."""

    views: list[str]
    probs: list[np.ndarray] = field(default_factory=list)
    readable: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    failures: dict[int, str] = field(default_factory=dict)

    @property
    def mean_probs(self) -> np.ndarray:
        return np.mean(self.probs, axis=0)


def views_for(tta: bool) -> tuple[str, ...]:
    """The test-time views scored: the centre crop alone, or every view of ``TTA_VIEWS``."""
    return TTA_VIEWS if tta else TTA_VIEWS[:1]


def score_views(
    clf: Classifier,
    paths: Sequence[Path],
    *,
    tta: bool,
    cache_dir: Path | None,
    batch_size: int | None,
    workers: int | None,
) -> Scores:
    """Class probabilities of each readable image under each view; features come from
    (and go to) the disk cache when ``cache_dir`` is given, else a throw-away one.
    ``workers``: decoding processes (``None``: as many as the device wants)."""
    scores = Scores(views=list(views_for(tta)))
    for view in scores.views:
        pre, flip = view_settings(clf.preprocessing, view)
        # Digesting the weights costs a pass over them: only worth it for the disk cache.
        space = (
            feature_space(clf.model, pre, flip=flip, precision=clf.precision, device_type=clf.device.type)
            if cache_dir is not None
            else ""
        )
        cache = FeatureCache(cache_dir, space)
        extraction = extract_features(
            clf.inference_network(),
            paths,
            pre,
            cache=cache,
            flip=flip,
            batch_size=batch_size,
            workers=workers,
            precision=clf.precision,
            device=clf.device,
        )
        with torch.inference_mode():
            features = torch.from_numpy(extraction.features)
            logits = (
                clf.model.get_classifier()(features) if len(features) else torch.zeros((0, len(clf.classes)))
            )
        scores.probs.append(logits.float().softmax(dim=-1).numpy())
        scores.readable, scores.failures = extraction.readable, extraction.failures
    return scores
