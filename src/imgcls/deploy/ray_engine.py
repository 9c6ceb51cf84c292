"""Batch prediction and feature extraction on a Ray cluster (``--engine ray``).

The file list becomes a Ray Dataset; a pool of actors, each holding the network once, runs
its blocks through imgcls's own tolerant decoder (a corrupt file gets its reason, not a
failed task; Ray's ``read_images`` would stop at mixed sizes) and returns every file's class
probabilities (``RayScoring``, for ``predict``) or feature vector (``RayEmbedding``, for
``embed`` and the extraction of ``train``, ``cv`` and ``compare``), or its error. The results
stream back in input order, a chunk at a time, into the same writers as a local run, so the
outputs' columns, the resume (finished work is not sent) and the unreadable-file report are
those of one process. Features also go into the feature cache (when it is on a file system
the cluster shares), so a later local run finds them there.

``address`` names a running cluster (``ray://host:10001`` or ``host:6379``; ``RAY_ADDRESS``
works too); without one, a cluster already started in this process is used, or a local one is
started. Ray is the optional ``ray`` extra.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.config import parse_device
from imgcls.data.images import ArchiveMember, ImageRef, MemoryImage
from imgcls.errors import ConfigError
from imgcls.inference.encoder import Encoder
from imgcls.inference.predictions import PathScores
from imgcls.models.features import Extraction

ROWS_PER_TASK = 256  # files an actor scores per call: enough to fill its forward batches


class _Scorer:
    """A Ray actor's model: loaded once, then called on blocks of file paths."""

    def __init__(self, model: str, runtime: str, device: str, batch_size: int | None) -> None:
        from imgcls.inference.loading import open_model

        self.predictor = open_model(model, runtime=runtime, device=device).predictor
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = _refs(batch)
        scores = self.predictor.score_paths(paths, batch_size=self.batch_size)  # type: ignore[arg-type]
        probs = np.zeros((len(paths), len(self.predictor.classes)), dtype=np.float32)
        probs[scores.readable] = scores.probs
        return {"path": batch["path"], "probs": probs, "error": _error_column(scores.failures, len(paths))}


class RayScoring:
    """``predict_to_file``'s chunk scoring, on a Ray cluster. ``device``: where each actor runs
    its model; ``cuda`` asks Ray for a GPU per actor, ``auto`` does where the cluster has GPUs
    (an actor sees its GPU as its first, whatever its index on the machine)."""

    def __init__(
        self,
        model: str | Path,
        *,
        runtime: str = "torch",
        address: str | None = None,
        actors: int | None = None,
        device: str = "auto",
        batch_size: int | None = None,
    ) -> None:
        self.model, self.runtime, self.batch_size = str(model), runtime, batch_size
        kind, _ = parse_device(device)
        self.device = kind  # what an actor asks for on its own machine
        self.pool = ActorPool(
            address, actors, gpus_per_actor=1.0 if kind == "cuda" else None if kind == "auto" else 0.0
        )

    def __call__(self, paths: Sequence[Any], chunk: int) -> Iterator[tuple[list[Path], PathScores]]:
        """Score ``paths`` (files) in ``chunk``-sized pieces, in order."""
        if not paths:
            return
        model = str(Path(self.model).absolute()) if Path(self.model).exists() else self.model
        options = {
            "model": model,
            "runtime": self.runtime,
            "device": self.device,
            "batch_size": self.batch_size,
        }
        for batch in self.pool.run(_Scorer, options, paths, chunk):
            readable, failures = _outcomes(batch)
            scores = PathScores(batch["probs"][readable], readable, failures)
            yield [Path(str(p)) for p in batch["path"]], scores


class _Embedder:
    """A Ray actor's encoder: received once, then called on blocks of file paths."""

    def __init__(self, encoder: list[Any], cache_dir: str | None, batch_size: int | None) -> None:
        import ray

        self.encoder = ray.get(encoder[0])  # wrapped: Ray would otherwise resolve it per call
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.batch_size = batch_size
        self.dim = int(self.encoder.network.num_features)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = _refs(batch)
        extraction = self.encoder.embed_files(paths, cache_dir=self.cache_dir, batch_size=self.batch_size)
        vectors = np.zeros((len(paths), self.dim), dtype=np.float32)
        vectors[extraction.readable] = extraction.features.reshape(-1, self.dim)
        errors = _error_column(extraction.failures, len(paths))
        # How many of the block's images went through the network (the rest came from the cache),
        # on its first row: rows are all Ray carries back.
        forwarded = np.zeros(len(paths), dtype=np.int64)
        forwarded[0] = extraction.computed
        return {"path": batch["path"], "vector": vectors, "error": errors, "forwarded": forwarded}


class RayEmbedding:
    """``Encoder.embed_files`` for many files, on a Ray cluster: each actor gets the encoder
    (the driver's network, so features land in the same feature-cache space) and writes what
    it computes into ``cache_dir``. An encoder on a GPU asks Ray for a GPU per actor (seen
    there as its first)."""

    def __init__(
        self,
        encoder: Encoder,
        *,
        cache_dir: Path | None,
        address: str | None = None,
        actors: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.encoder, self.cache_dir, self.batch_size = encoder, cache_dir, batch_size
        self.pool = ActorPool(address, actors, gpus_per_actor=1.0 if encoder.device.type == "cuda" else 0.0)

    def __call__(self, paths: Sequence[Any], chunk: int) -> Iterator[Extraction]:
        """The features of ``paths``, ``chunk`` files at a time, in order."""
        if not paths:
            return
        ray = self.pool.connect()
        options = {
            "encoder": [ray.put(self.encoder)],
            "cache_dir": str(self.cache_dir.absolute()) if self.cache_dir is not None else None,
            "batch_size": self.batch_size,
        }
        for batch in self.pool.run(_Embedder, options, paths, chunk):
            readable, failures = _outcomes(batch)
            features = np.asarray(batch["vector"], dtype=np.float32)[readable]
            yield Extraction(features, readable, failures, computed=int(batch["forwarded"].sum()))


class ActorPool:
    """A pool of actors on a Ray cluster that maps blocks of files, results in input order.
    ``gpus_per_actor``: what each actor asks Ray for; ``None``: one where the cluster has GPUs."""

    def __init__(self, address: str | None, actors: int | None, gpus_per_actor: float | None) -> None:
        self.address, self.actors, self.gpus_per_actor = address, actors, gpus_per_actor

    def connect(self) -> Any:
        return connect(self.address)

    def run(
        self, actor: type, options: dict[str, Any], paths: Sequence[Any], chunk: int
    ) -> Iterator[dict[str, np.ndarray]]:
        """``actor(**options)`` on blocks of ``paths`` (files); ``chunk`` rows at a time, in order."""
        items = [_row(p) for p in paths]
        ray = self.connect()
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        dataset = ray.data.from_items(items).map_batches(
            actor,
            fn_constructor_kwargs=options,
            batch_size=ROWS_PER_TASK,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.actors or _default_actors(ray)),
            num_gpus=self._gpus(ray),
        )
        yield from dataset.iter_batches(batch_size=chunk, batch_format="numpy")

    def _gpus(self, ray: Any) -> float:
        if self.gpus_per_actor is not None:
            return self.gpus_per_actor
        return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def _error_column(failures: dict[int, str], n: int) -> np.ndarray:
    """An actor's ``error`` column: each row's unreadable-file reason, empty where it was read."""
    return np.array([failures.get(i, "") for i in range(n)], dtype=object)


def _outcomes(batch: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[int, str]]:
    """Which rows of a returned block were read, and the others' reasons (``_error_column``)."""
    errors = [str(e) for e in batch["error"]]
    return np.array([not e for e in errors], dtype=bool), {i: e for i, e in enumerate(errors) if e}


def _row(ref: Any) -> dict[str, Any]:
    """A file, or an image inside a shard, as a Ray row. Workers need not share this process's
    working directory: they get absolute paths."""
    if isinstance(ref, Path):
        return {"path": str(ref), "file": str(ref.absolute()), "offset": -1, "size": -1}
    if isinstance(ref, MemoryImage) and isinstance(ref.member, ArchiveMember):
        member = ref.member
        return {"path": ref.name, "file": str(member.archive.absolute()), "offset": member.offset,
                "size": member.size}  # fmt: skip
    raise ConfigError(
        "`engine=ray` reads image files and WebDataset shards; this source holds images in memory "
        "(CIFAR, a Hugging Face data set): write it as files or shards first with imgcls convert"
    )


def _refs(batch: dict[str, np.ndarray]) -> list[ImageRef]:
    """The images of a block of ``_row``s, as the worker reads them."""
    refs: list[ImageRef] = []
    for name, file, offset, size in zip(
        batch["path"], batch["file"], batch["offset"], batch["size"], strict=True
    ):
        if offset < 0:
            refs.append(Path(str(file)))
        else:
            refs.append(MemoryImage(str(name), member=ArchiveMember(Path(str(file)), int(offset), int(size))))
    return refs


def connect(address: str | None) -> Any:
    """Ray, initialised: on ``address``, on the cluster this process already joined, or locally."""
    try:
        import ray
    except ModuleNotFoundError as exc:
        raise ConfigError("`engine=ray` needs Ray: pip install 'imgcls[ray]'") from exc
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray


def _default_actors(ray: Any) -> int:
    """One actor per two CPUs of the cluster (each decodes and runs the network), at least one."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)) // 2)
