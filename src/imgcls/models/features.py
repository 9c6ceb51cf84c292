"""Frozen-backbone feature extraction with an on-disk cache keyed by content.

A cache entry is keyed by the image file's content digest inside a *feature space*: a
digest of the network's backbone tensors and the preprocessing (``models.feature_store``
keeps the entries). A second run on the same data and backbone extracts nothing, and the
features come back as one matrix assembled from the cache a shard at a time, so memory holds
one shard of computed features at a time, never two copies of the data set's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from imgcls.data._prefetch import DecodePrefetch, active_prefetch
from imgcls.data.images import ImageRef, MemoryImage, UnreadableImageError, load_rgb
from imgcls.data.preprocessing import Preprocessing
from imgcls.data.transforms import eval_crop, normalize_batch
from imgcls.models.feature_store import SHARD_IMAGES, FeatureCache
from imgcls.models.weights import classifier_prefix
from imgcls.system.devices import CPU, forward_batch, loader_workers, pins_memory, place
from imgcls.system.precision import autocast
from imgcls.system.profiling import PROFILE

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    env = os.environ.get("IMGCLS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "imgcls"


def file_digest(path: ImageRef) -> str:
    """Content digest of an image file (or of an image held in memory): the cache's key."""
    if isinstance(path, MemoryImage):
        return path.digest()
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "blake2b").hexdigest()[:32]


def feature_space(
    model: nn.Module,
    pre: Preprocessing,
    *,
    flip: bool = False,
    output: str = "pooled",
    precision: str = "fp32",
    device_type: str = "cpu",
) -> str:
    """Digest of everything that decides a feature vector: backbone tensors + preprocessing,
    and the precision and kind of device that computed it (their kernels round differently).

    ``output`` names what is stored: ``pooled`` features, or e.g. ``trunk-5`` (the activation
    maps after the first five stages).
    """
    digest = hashlib.blake2b(digest_size=12)
    described = {
        "format": CACHE_FORMAT,
        "pre": pre.to_dict(),
        "flip": flip,
        "net": type(model).__name__,
        # BatchNorm eps and padding mode are not in the state dict; the architecture name is.
        "arch": (getattr(model, "pretrained_cfg", None) or {}).get("architecture"),
        # Features come from the network with its BatchNorms folded (batchnorm_fold).
        "batchnorm": "folded",
    }
    if output != "pooled":
        described["output"] = output
    if precision != "fp32":
        described["precision"] = precision
    if device_type != "cpu":
        described["device"] = device_type
    digest.update(json.dumps(described, sort_keys=True).encode())
    _hash_backbone(digest, model)
    return digest.hexdigest()


def weights_digest(model: nn.Module) -> str:
    """Digest of the network's backbone tensors (its classifier left out): which weights
    produced a set of features."""
    digest = hashlib.blake2b(digest_size=16)
    _hash_backbone(digest, model)
    return digest.hexdigest()


def _hash_backbone(digest: Any, model: nn.Module) -> None:
    head = classifier_prefix(model) + "."
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(head):
            continue
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())


@dataclass
class Extraction:
    """Features of the readable images, in input order, and why the others failed."""

    features: np.ndarray
    readable: np.ndarray
    failures: dict[int, str] = field(default_factory=dict)
    computed: int = 0
    seconds: float = 0.0


class _ImageFiles(Dataset):
    def __init__(self, paths: Sequence[Path], indices: Sequence[int], pre: Preprocessing, flip: bool) -> None:
        self.paths, self.indices = paths, indices
        self.transform = eval_crop(pre, flip=flip)
        self.min_side = pre.resize_size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None, tuple[float, float]]:
        index = self.indices[i]
        started = time.perf_counter()
        try:
            image = load_rgb(self.paths[index], min_side=self.min_side)
        except UnreadableImageError as exc:
            return index, None, exc.reason, (time.perf_counter() - started, 0.0)
        decoded = time.perf_counter()
        tensor = self.transform(image)
        return index, tensor, None, (decoded - started, time.perf_counter() - decoded)


_Item = tuple[int, torch.Tensor | None, str | None, tuple[float, float]]
# indices, stacked uint8 crops, unreadable images' reasons, seconds per profile stage
_Batch = tuple[list[int], torch.Tensor | None, dict[int, str], dict[str, float]]


def _collate(items: list[_Item]) -> _Batch:
    """Stack the readable images; the per-image decode/transform seconds go to the profile
    (summed here, in whichever process collates)."""
    ok = [(i, t) for i, t, _, _ in items if t is not None]
    failures = {i: reason for i, _, reason, _ in items if reason is not None}
    batch = torch.stack([t for _, t in ok]) if ok else None
    timings = {"decode": sum(s[0] for *_, s in items), "transform": sum(s[1] for *_, s in items)}
    return [i for i, _ in ok], batch, failures, timings


Embedding = Callable[[torch.Tensor], torch.Tensor]


def _storage_dtype(output: torch.Tensor) -> np.ndarray:
    """float32 in host memory, also for activation maps: a model scored on cached maps must
    score exactly as it does on images."""
    return output.float().cpu().contiguous().numpy()


# On a CPU a forward pass over 8 images is faster per image than one over 32: a small batch's
# activation maps stay in the caches (in bf16 and fp32 alike; docs/performance.md).
CPU_FORWARD_CHUNK = 8


def in_chunks(forward: Embedding, batch: torch.Tensor) -> torch.Tensor:
    """``forward(batch)``, run ``CPU_FORWARD_CHUNK`` images at a time on a CPU (per-image
    results; a GPU takes the whole batch)."""
    if batch.device.type != "cpu" or len(batch) <= CPU_FORWARD_CHUNK:
        return forward(batch)
    return torch.cat([forward(part) for part in batch.split(CPU_FORWARD_CHUNK)])


def pooled_features(model: nn.Module, batch: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """The backbone's pooled, pre-logits features (what the classifier sees), as float32, on
    the device of ``batch`` (the model's)."""

    def pooled(x: torch.Tensor) -> torch.Tensor:
        return model.forward_head(model.forward_features(x), pre_logits=True).float()

    with autocast(precision, batch.device.type):
        return in_chunks(pooled, batch.contiguous(memory_format=torch.channels_last))


def extract_features(
    model: nn.Module,
    paths: Sequence[Path],
    pre: Preprocessing,
    *,
    cache: FeatureCache,
    flip: bool = False,
    batch_size: int | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    embed: Embedding | None = None,
    precision: str = "fp32",
    device: torch.device = CPU,
) -> Extraction:
    """Features for ``paths`` (model in eval mode, on ``device``): cached where possible,
    computed otherwise.

    ``embed`` maps an input batch to features (default: the pooled features of ``model``);
    ``cache`` must belong to the feature space of ``model``, ``pre``, ``flip``, ``embed``,
    ``precision`` (``fp32``, or the autocast dtype of the forward pass) and ``device``'s kind.
    ``workers``: decoding processes (``None``: as many as ``device`` wants for the images the
    cache lacks); ``batch_size``: images per forward pass (``None``: as many as ``device`` wants).
    """
    started = time.perf_counter()
    failures: dict[int, str] = {}
    with PROFILE.stage("file digests + cache lookup"):
        digests, known = _lookup(paths, cache, failures)
    todo = [i for i, d in enumerate(digests) if d is not None and d not in known]
    del known
    workers = loader_workers(workers, len(todo), device)
    batch_size = forward_batch(batch_size, device)
    # The decode-ahead child is a CPU trick: it uses the time torch takes to import.
    prefetch = active_prefetch(pre) if not flip and device.type == "cpu" else None
    batches = _batches(
        paths, todo, pre, flip, batch_size=batch_size, workers=workers, prefetch=prefetch, device=device
    )
    embed = embed or (lambda batch: pooled_features(model, batch))
    with autocast(precision, device.type), _threads_beside(prefetch, embed) as forward:
        computed = _compute(forward, pre, batches, len(todo), digests, cache, failures, progress, device)
    with PROFILE.stage("assemble the feature matrix"):
        extraction = _assemble(paths, digests, cache, failures, computed_count=computed)
    extraction.seconds = time.perf_counter() - started
    return extraction


@contextlib.contextmanager
def _threads_beside(prefetch: DecodePrefetch | None, embed: Embedding) -> Iterator[Embedding]:
    """Yields ``embed`` run with one torch thread fewer than usual while the prefetch child
    decodes on a core, and all of them once it is done; the usual count is restored after the
    block. Two threads beside a decoding child on two cores fight it for a core, and the
    trunk pass slows down more than the child's work is worth."""
    usual = torch.get_num_threads()

    def forward(batch: torch.Tensor) -> torch.Tensor:
        wanted = usual - 1 if usual > 1 and prefetch is not None and prefetch.decoding() else usual
        if wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)
        return embed(batch)

    try:
        yield forward
    finally:
        torch.set_num_threads(usual)


def _lookup(
    paths: Sequence[Path], cache: FeatureCache, failures: dict[int, str]
) -> tuple[list[str | None], set[str]]:
    """Each file's content digest (``None`` if unreadable) and those the cache holds."""
    digests: list[str | None] = []
    for index, path in enumerate(paths):
        if cache.directory is None:  # nothing to look up or keep: key by position, skip hashing
            digests.append(f"#{index}")
            continue
        try:
            digests.append(file_digest(path))
        except OSError as exc:
            digests.append(None)
            failures[index] = f"cannot read file ({exc.strerror})"
        except UnreadableImageError as exc:  # an image inside an archive that cannot be read
            digests.append(None)
            failures[index] = exc.reason
    return digests, cache.known([d for d in digests if d is not None])


def _batches(
    paths: Sequence[Path],
    todo: list[int],
    pre: Preprocessing,
    flip: bool,
    *,
    batch_size: int,
    workers: int,
    prefetch: DecodePrefetch | None,
    device: torch.device,
) -> Iterator[_Batch]:
    """Batches of the ``todo`` images: those the prefetch decoded first, then the loader's
    (in pinned memory for an accelerator)."""
    rest = todo
    if prefetch is not None:
        rest = []
        yield from _prefetched_batches(prefetch, paths, todo, batch_size, rest)
    if rest:
        files = _ImageFiles(paths, rest, pre, flip)
        pin = pins_memory(device)
        yield from DataLoader(
            files, batch_size=batch_size, num_workers=workers, collate_fn=_collate, pin_memory=pin
        )


def _prefetched_batches(
    prefetch: DecodePrefetch, paths: Sequence[Path], todo: list[int], batch_size: int, missed: list[int]
) -> Iterator[_Batch]:
    """Collate the prefetch's crops; indices it does not have go to ``missed``."""
    items: list[_Item] = []
    for index in todo:
        decoded = prefetch.get(paths[index])
        if decoded is None:
            missed.append(index)
            continue
        crop = torch.from_numpy(decoded.crop) if decoded.crop is not None else None
        items.append((index, crop, decoded.reason, (decoded.seconds, 0.0)))
        if len(items) == batch_size:
            yield _prefetched(_collate(items))
            items = []
    if items:
        yield _prefetched(_collate(items))


def _prefetched(batch: _Batch) -> _Batch:
    indices, crops, failures, timings = batch
    return indices, crops, failures, {"decode + crop": timings["decode"]}


def _compute(
    embed: Embedding,
    pre: Preprocessing,
    batches: Iterator[_Batch],
    total: int,
    digests: list[str | None],
    cache: FeatureCache,
    failures: dict[int, str],
    progress: Callable[[int, int], None] | None,
    device: torch.device,
) -> int:
    """Run the images the cache lacks through the backbone on ``device`` and add them to the
    cache in shards; the number of images computed."""
    if not total:
        return 0
    pending: list[str] = []
    rows: list[np.ndarray] = []
    done = computed = 0
    with torch.inference_mode():
        while True:
            with PROFILE.stage("wait for decoded images"):
                item = next(batches, None)
            if item is None:
                break
            indices, batch, batch_failures, timings = item
            for stage, seconds in timings.items():
                PROFILE.add(stage, seconds, len(indices) + len(batch_failures))
            failures.update(batch_failures)
            if batch is not None:
                with PROFILE.stage("normalise batches"):
                    inputs = normalize_batch(place(batch, device), pre)
                with PROFILE.stage("forward (features)"):
                    rows.append(_storage_dtype(in_chunks(embed, inputs)))
                pending.extend(digests[index] for index in indices)  # type: ignore[misc]
                computed += len(indices)
            if len(pending) >= SHARD_IMAGES:
                with PROFILE.stage("cache write"):
                    cache.add(pending, np.concatenate(rows))
                pending, rows = [], []
            done += len(indices) + len(batch_failures)
            if progress is not None:
                progress(done, total)
    if pending:
        with PROFILE.stage("cache write"):
            cache.add(pending, np.concatenate(rows))
    return computed


def _assemble(
    paths: Sequence[Path],
    digests: list[str | None],
    cache: FeatureCache,
    failures: dict[int, str],
    *,
    computed_count: int,
) -> Extraction:
    readable = np.array([i not in failures for i in range(len(paths))], dtype=bool)
    kept = [d for i, d in enumerate(digests) if readable[i] and d is not None]
    features = cache.gather(kept) if kept else np.zeros((0, 0), dtype=np.float32)
    return Extraction(features=features, readable=readable, failures=failures, computed=computed_count)
