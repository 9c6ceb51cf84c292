"""Duplicate images and what they do to a split: groups of the same picture, the groups whose
members carry different labels, and leakage (held-out images with a copy in training).

Pairs come from two kinds of evidence: near-identical embeddings (cosine similarity at or above
a threshold) and near-identical perceptual hashes. Groups are the connected components of the
pairs, so a chain of copies is one group.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from imgcls.data.records import TRAIN


@dataclass(frozen=True)
class DuplicateGroup:
    members: tuple[int, ...]  # image indices, ascending
    exact: bool  # every member has the same content digest
    similarity: float  # the lowest cosine similarity between paired members

    def labels(self, labels: Sequence[str]) -> set[str]:
        return {labels[i] for i in self.members}


def leaks(splits: Iterable[str], train: str = TRAIN) -> bool:
    """Whether copies in these splits sit in training and in a held-out split at once."""
    present = set(splits)
    return train in present and len(present) > 1


def identical_rows(features: np.ndarray) -> list[list[int]]:
    """Groups (two or more) of rows with exactly the same features: the same decoded picture."""
    rows = np.ascontiguousarray(features)
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel() if rows.size else []
    groups: dict[bytes, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(bytes(key), []).append(i)
    return [members for members in groups.values() if len(members) > 1]


def embedding_pairs(
    neighbour_sims: np.ndarray, neighbour_idx: np.ndarray, threshold: float
) -> dict[tuple[int, int], float]:
    """Pairs ``(i, j)``, ``i < j``, whose cosine similarity is at least ``threshold``, from each
    image's nearest neighbours (rows: images; its own index among them is ignored)."""
    pairs: dict[tuple[int, int], float] = {}
    for i, (sims, idx) in enumerate(zip(neighbour_sims, neighbour_idx, strict=True)):
        for sim, j in zip(sims, idx, strict=True):
            if j != i and sim >= threshold:
                key = (min(i, int(j)), max(i, int(j)))
                pairs[key] = max(pairs.get(key, -1.0), float(sim))
    return pairs


HASH_BITS = 64
HASH_CHUNKS = 5  # a pair within 4 bits agrees exactly on at least one of 5 chunks (pigeonhole)
CROWDED_BUCKET = 5_000  # a chunk value this common is a blank-ish picture's: skipped, not compared


def hash_pairs(hashes: Sequence[int], max_distance: int) -> dict[tuple[int, int], int]:
    """Pairs ``(i, j)``, ``i < j``, whose 64-bit hashes differ in at most ``max_distance`` bits
    (``max_distance < HASH_CHUNKS``), with their distance. Candidates share a chunk of bits, so
    the search is near linear rather than over all pairs."""
    if max_distance >= HASH_CHUNKS:
        raise ValueError(f"max_distance must be below {HASH_CHUNKS}")
    edges = np.linspace(0, HASH_BITS, HASH_CHUNKS + 1).astype(int)
    pairs: dict[tuple[int, int], int] = {}
    for low, high in itertools.pairwise(edges):
        buckets: dict[int, list[int]] = {}
        for i, h in enumerate(hashes):
            buckets.setdefault((h >> int(low)) & ((1 << int(high - low)) - 1), []).append(i)
        for members in buckets.values():
            if len(members) < 2 or len(members) > CROWDED_BUCKET:
                continue
            for a, i in enumerate(members):
                for j in members[a + 1 :]:
                    distance = (hashes[i] ^ hashes[j]).bit_count()
                    if distance <= max_distance:
                        pairs[(i, j)] = distance
    return pairs


def group_pairs(pairs: Iterable[tuple[int, int]], n: int) -> list[list[int]]:
    """Connected components (of size two or more) of the pairs over ``n`` images."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[root(i)] = root(j)
    components: dict[int, list[int]] = {}
    for i in range(n):
        components.setdefault(root(i), []).append(i)
    return [sorted(c) for c in components.values() if len(c) > 1]


def leakage(groups: Sequence[DuplicateGroup], splits: Sequence[str], train: str = TRAIN) -> dict[str, dict]:
    """Per held-out split: how many of its images have a copy in the training split."""
    counts = {s: sum(1 for x in splits if x == s) for s in dict.fromkeys(splits) if s != train}
    leaked: dict[str, set[int]] = {s: set() for s in counts}
    for group in groups:
        if leaks((splits[i] for i in group.members), train):
            for i in group.members:
                if splits[i] in leaked:
                    leaked[splits[i]].add(i)
    return {
        f"{s} -> {train}": {"images": counts[s], "with_copy_in_train": len(leaked[s]),
                            "share": len(leaked[s]) / counts[s] if counts[s] else 0.0}
        for s in counts
    }  # fmt: skip
