"""``Encoder``: a network's pooled features (what its classifier reads) for images and files.

An encoder is a trained model's backbone (``RUN_DIR``) or a pretrained backbone by name. Its
features are those ``train`` computes (same preprocessing, precision and BatchNorm folding),
so the feature cache serves both, and ``describe`` says enough to build the same encoder
again (``inference.loading.open_encoder(**describe()["encoder"])``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imgcls.data.images import ImageInput, ImageRef, as_rgb_image
from imgcls.data.preprocessing import Preprocessing
from imgcls.data.transforms import eval_transform
from imgcls.models._batchnorm_fold import folded_for_inference
from imgcls.models.features import (
    Extraction,
    FeatureCache,
    extract_features,
    feature_space,
    pooled_features,
    weights_digest,
)
from imgcls.system.devices import CPU, forward_batch, place


@dataclass
class Encoder:
    """``network``'s pooled features under ``preprocessing`` at ``precision``.

    ``origin`` holds what rebuilds it: ``model`` (a run directory or a backbone name),
    ``weights`` and ``input_size``; and ``backbone`` and ``weights_source`` for people.
    """

    network: nn.Module
    preprocessing: Preprocessing
    precision: str
    origin: dict[str, Any]
    device: torch.device = CPU
    _folded: nn.Module | None = field(default=None, repr=False)

    def folded(self) -> nn.Module:
        """The network with its BatchNorms folded (how features are computed everywhere), on
        the encoder's device."""
        if self._folded is None:
            self._folded = place(
                folded_for_inference(self.network, self.preprocessing.input_size), self.device
            )
        return self._folded

    def space(self) -> str:
        """The feature-cache space of these features (shared with ``train`` on the same backbone,
        precision and kind of device)."""
        return feature_space(
            self.network, self.preprocessing, precision=self.precision, device_type=self.device.type
        )

    def describe(self) -> dict[str, Any]:
        """What produced the features: stored with every embedding file."""
        return {
            "encoder": {k: self.origin[k] for k in ("model", "weights", "input_size")},
            "backbone": self.origin["backbone"],
            "weights_source": self.origin.get("weights_source"),
            "weights_digest": weights_digest(self.network),
            "feature_space": self.space(),
            "preprocessing": self.preprocessing.to_dict(),
            "precision": self.precision,
        }

    def embed_images(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Features (images x dim, float32) of decoded images, files or encoded bytes."""
        transform = eval_transform(self.preprocessing)
        tensors = [
            transform(as_rgb_image(image, min_side=self.preprocessing.resize_size)[1]) for image in images
        ]
        if not tensors:
            return np.zeros((0, 0), dtype=np.float32)
        outputs = []
        with torch.inference_mode():
            for batch in torch.stack(tensors).split(forward_batch(None, self.device)):
                outputs.append(
                    pooled_features(self.folded(), place(batch, self.device), self.precision).cpu()
                )
        return torch.cat(outputs).float().numpy()

    def embed_files(
        self,
        paths: Sequence[ImageRef],
        *,
        cache_dir: Path | None,
        batch_size: int | None = None,
        workers: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Extraction:
        """Features of the readable files among ``paths`` (from and to the cache in ``cache_dir``)."""
        return extract_features(
            self.folded(),
            paths,
            self.preprocessing,
            cache=FeatureCache(cache_dir, self.space() if cache_dir is not None else ""),
            batch_size=batch_size,
            workers=workers,
            progress=progress,
            precision=self.precision,
            device=self.device,
        )
