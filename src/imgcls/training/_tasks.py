"""The two kinds of training task the epoch loop runs.

``ActivationTask`` trains the top stages of a split network on cached trunk activations:
the frozen lower stages ran once per image, so an epoch costs only the top's forward and
backward pass. Its augmentation works on the activation maps (random crops of the map,
mixup for ``strong``): convolutions commute with translation, so a crop of the map stands
in for a crop of the image. (Mirroring a map is not the map of a mirrored image, as
channels respond to oriented patterns, so there is no flip.)

``ImageTask`` trains a whole network (or its unfrozen part) on augmented images decoded
on the fly, for GPUs and for architectures that cannot be split.

Under torchrun each rank trains on its share of every epoch's batches (the global batch size
divided between the ranks) and scores its share of any rows it is asked to score; the
results are gathered by row (``Ranks.map_rows``), so every rank sees the same scores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from imgcls.data.images import load_rgb
from imgcls.data.transforms import augment_preset, mixup
from imgcls.system.cpu import available_memory
from imgcls.system.devices import pins_memory, place
from imgcls.system.distributed import SINGLE, Ranks
from imgcls.system.precision import autocast
from imgcls.training._loop import EpochRandom, Validation

log = logging.getLogger(__name__)

EVAL_BATCH = 128


def train_with_frozen_norms(module: nn.Module) -> None:
    """Training mode, except that normalisation layers keep their pretrained statistics.

    The head starts as a classifier fitted on the frozen features; batch statistics of small
    (and augmented) batches would shift those features away from what it was fitted on.
    Their affine parameters still train.
    """
    module.train()
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eval()


@dataclass
class LabelledRows:
    """Which rows of the data train, which validate, and every row's class index."""

    labels: torch.Tensor
    train: torch.Tensor  # row indices
    val: torch.Tensor


def score(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Validation:
    loss = float(F.cross_entropy(logits.float(), labels))
    predicted = logits.argmax(dim=1)
    recalls = [
        float((predicted[labels == c] == c).float().mean()) for c in range(num_classes) if (labels == c).any()
    ]
    accuracy = float((predicted == labels).float().mean())
    return Validation(loss, accuracy, float(np.mean(recalls)), len(labels))


class ActivationTask:
    """Train ``top`` on cached activation maps (rows of ``maps``) with map-space augmentation."""

    def __init__(
        self,
        top: nn.Module,
        maps: torch.Tensor,
        rows: LabelledRows,
        *,
        num_classes: int,
        batch_size: int,
        augment: str,
        precision: str = "fp32",
        device: torch.device | None = None,
        ranks: Ranks = SINGLE,
    ) -> None:
        self.module, self.maps, self.rows, self.precision = top, maps, rows, precision
        self.device = device or torch.device("cpu")
        self.ranks = ranks
        self.num_classes, self.batch_size = num_classes, per_rank(batch_size, ranks)
        preset = augment_preset(augment)
        self.crop, self.mixup = preset.map_crop, preset.mixup

    def num_batches(self) -> int:
        return -(-len(self.ranks.take(self.rows.train)) // self.batch_size)

    def train_mode(self) -> None:
        train_with_frozen_norms(self.module)

    def batches(self, random: EpochRandom) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.rows.train[torch.randperm(len(self.rows.train), generator=random.order)]
        order = self.ranks.take(order)
        for start in range(0, len(order), self.batch_size):
            picked = order[start : start + self.batch_size]
            inputs = self._augment(self.maps[picked].float(), random.augment)
            targets = self.rows.labels[picked]
            if self.mixup:
                inputs, targets = mixup(inputs, targets, self.num_classes, self.mixup, random.augment)
            yield inputs, targets

    def _augment(self, maps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.crop is None:
            return maps
        side = maps.shape[-1]
        low, high = self.crop
        fraction = low + (high - low) * float(torch.rand((), generator=generator))
        crop = max(1, round(side * fraction))
        y, x = (int(v) for v in torch.randint(0, side - crop + 1, (2,), generator=generator))
        return maps[:, :, y : y + crop, x : x + crop]

    def logits(self, rows: torch.Tensor) -> torch.Tensor:
        """The module's logits of the maps ``rows`` (each rank scores its share)."""
        return self.ranks.map_rows(len(rows), lambda mine: self._logits(rows[mine]), "gathering scores")

    @torch.inference_mode()
    def _logits(self, rows: torch.Tensor) -> torch.Tensor:
        self.module.eval()
        parts = []
        with autocast(self.precision, self.device.type):
            for i in range(0, len(rows), EVAL_BATCH):
                batch = place(self.maps[rows[i : i + EVAL_BATCH]], self.device)
                parts.append(self.module(batch.contiguous(memory_format=torch.channels_last)).float().cpu())
        return torch.cat(parts)

    def validate(self) -> Validation | None:
        if not len(self.rows.val):
            return None
        return score(self.logits(self.rows.val), self.rows.labels[self.rows.val], self.num_classes)


def per_rank(batch_size: int, ranks: Ranks) -> int:
    """Each rank's part of the global ``batch_size``: gradients averaged over the ranks then
    match one process's batch, and the plan's learning rate and step count hold."""
    return max(1, -(-batch_size // ranks.world_size))


DECODED_MEMORY_FRACTION = 0.25  # of the memory available, for decoded training images


class _Decode(Dataset):
    def __init__(self, paths: Sequence[Path], min_side: int) -> None:
        self.paths, self.min_side = paths, min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.array(load_rgb(self.paths[i], min_side=self.min_side))  # writable, for torch


class _TrainImages(Dataset):
    """Decoded, transformed images; an unreadable file raises (it was readable when the data
    was featurised, so it changed under us).

    ``keep_decoded`` decodes every image once, in parallel, and keeps the pixels in memory
    while the budget lasts; later epochs only transform. Kept pixels are exactly what decoding
    returns, so results do not depend on how much was kept.
    """

    def __init__(
        self, paths: Sequence[Path], labels: Sequence[int], transform: Callable, min_side: int
    ) -> None:
        self.paths, self.labels, self.transform, self.min_side = paths, labels, transform, min_side
        self.decoded: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        pixels = self.decoded.get(i)
        image = (
            Image.fromarray(pixels) if pixels is not None else load_rgb(self.paths[i], min_side=self.min_side)
        )
        return self.transform(image), self.labels[i]

    def keep_decoded(self, budget_bytes: int, workers: int) -> None:
        loader = DataLoader(
            _Decode(self.paths, self.min_side),
            batch_size=None,
            num_workers=workers,
            generator=torch.Generator().manual_seed(0),  # leave the global generator alone (resume)
        )
        used = 0
        for i, pixels in enumerate(loader):
            if used + pixels.nbytes > budget_bytes:
                log.info("decoded-image cache full after %d of %d images", i, len(self.paths))
                return
            self.decoded[i] = pixels.numpy() if isinstance(pixels, torch.Tensor) else pixels
            used += pixels.nbytes
        log.info("decoded-image cache: %d images, %.0f MB", len(self.decoded), used / 2**20)


class ImageTask:
    """Train ``model`` end to end on augmented images; validate on eval-transformed ones."""

    def __init__(
        self,
        model: nn.Module,
        train: tuple[Sequence[Path], Sequence[int]],
        val: tuple[Sequence[Path], Sequence[int]],
        *,
        transforms: tuple[Callable, Callable],
        mixer: Callable | None,
        num_classes: int,
        batch_size: int,
        workers: int,
        min_side: int,
        device: torch.device,
        precision: str = "fp32",
        ranks: Ranks = SINGLE,
        seed: int = 0,
    ) -> None:
        self.module, self.num_classes, self.device = model, num_classes, device
        self.precision, self.ranks, self.seed = precision, ranks, seed
        self.train_set = _TrainImages(*train, transforms[0], min_side)
        self.val_set = _TrainImages(*val, transforms[1], min_side)
        self.mixer, self.batch_size, self.workers = mixer, per_rank(batch_size, ranks), workers
        self._decoded_once = False

    def num_batches(self) -> int:
        return len(self._loader(None))

    def _loader(self, random: EpochRandom | None) -> DataLoader:
        """This rank's training batches: shuffled by ``random.order`` when alone, by a
        ``DistributedSampler`` seeded alike on every rank (and set to the epoch) under torchrun."""
        sampler = None
        if self.ranks.active:
            sampler = DistributedSampler(
                self.train_set, self.ranks.world_size, self.ranks.rank, shuffle=True, seed=self.seed
            )
            sampler.set_epoch(random.epoch if random is not None else 0)
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            generator=random.augment if random is not None else None,
            num_workers=self.workers,
            drop_last=len(self.train_set) > self.batch_size,  # BatchNorm needs more than one image
            pin_memory=pins_memory(self.device),
        )

    def train_mode(self) -> None:
        train_with_frozen_norms(self.module)

    def batches(self, random: EpochRandom) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self._decoded_once:
            self._decoded_once = True
            self.train_set.keep_decoded(int(available_memory() * DECODED_MEMORY_FRACTION), self.workers)
        for inputs, targets in self._loader(random):
            yield self.mixer(inputs, targets) if self.mixer is not None else (inputs, targets)

    def validate(self) -> Validation | None:
        if not len(self.val_set):
            return None
        return score(self._logits(self.val_set), torch.tensor(self.val_set.labels), self.num_classes)

    def logits(self, paths: Sequence[Path]) -> torch.Tensor:
        """The network's logits for images under the eval transform (e.g. a split to score)."""
        return self._logits(
            _TrainImages(paths, [0] * len(paths), self.val_set.transform, self.val_set.min_side)
        )

    def _logits(self, images: Dataset) -> torch.Tensor:
        """Each rank scores its share of ``images``; every rank gets all the logits."""
        return self.ranks.map_rows(
            len(images),  # type: ignore[arg-type]
            lambda mine: self._local_logits(Subset(images, mine.tolist())),
            "gathering scores",
        )

    @torch.inference_mode()
    def _local_logits(self, images: Dataset) -> torch.Tensor:
        self.module.eval()
        loader = DataLoader(
            images,
            batch_size=EVAL_BATCH // 2,
            num_workers=self.workers,
            generator=torch.Generator().manual_seed(0),  # leave the global generator alone (resume)
        )
        logits = []
        for inputs, _ in loader:
            inputs = place(inputs, self.device).contiguous(memory_format=torch.channels_last)
            with autocast(self.precision, self.device.type):
                logits.append(self.module(inputs).float().cpu())
        return torch.cat(logits)
