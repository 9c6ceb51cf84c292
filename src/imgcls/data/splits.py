"""Seeded, stratified train/val/test assignment and the ``splits.csv`` manifest.

Pure functions over labels and paths: no images are read here.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from imgcls._files import read_csv, write_csv_atomic
from imgcls.config import DEFAULT_TEST_FRACTION
from imgcls.data.records import TEST, TRAIN, VAL, ImageRecord
from imgcls.errors import DataError
from imgcls.system.wording import count

log = logging.getLogger(__name__)

SPLITS = (TRAIN, VAL, TEST)
# A class this small gives no test images: one held-out image says little about it, and each
# one taken costs a small class a large share of what it trains on.
MIN_CLASS_FOR_TEST = 10


def assign_splits(
    records: Sequence[ImageRecord],
    *,
    val_fraction: float,
    test_fraction: float | None,
    seed: int,
) -> list[str]:
    """The split of each record.

    Records from a ``val/`` or ``test/`` folder keep it. Of the training records, a
    stratified, seeded ``val_fraction`` becomes val when there is no val folder and
    ``test_fraction`` becomes test when there is no test folder (only from classes of at least
    ``MIN_CLASS_FOR_TEST`` images). Each class is shuffled with its own seed-derived generator,
    so adding a class does not reshuffle the others; val is carved before test, so the test
    fraction does not move any image between train and val. ``test_fraction=None`` means
    ``DEFAULT_TEST_FRACTION`` where no record comes from a val or test folder, else none: a
    data set's own held-out folder is its evaluation protocol, and its training images stay
    whole for it.
    """
    folders = {r.folder_split for r in records}
    if test_fraction is None:
        test_fraction = 0.0 if folders & {VAL, TEST} else DEFAULT_TEST_FRACTION
    carve_val = VAL not in folders and val_fraction > 0
    carve_test = TEST not in folders and test_fraction > 0
    splits = [r.folder_split or TRAIN for r in records]
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        if splits[i] == TRAIN:
            by_class[record.label].append(i)
    for label, indices in sorted(by_class.items()):
        indices.sort(key=lambda i: records[i].path)
        order = _class_rng(seed, label).permutation(len(indices))
        shuffled = [indices[j] for j in order]
        n_val, n_test = _carve_sizes(len(shuffled), carve_val and val_fraction, carve_test and test_fraction)
        for i in shuffled[:n_val]:
            splits[i] = VAL
        for i in shuffled[n_val : n_val + n_test]:
            splits[i] = TEST
    return splits


def _class_rng(seed: int, label: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(label.encode("utf-8"))])


def _carve_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """How many of a class's ``n`` training images go to val and test; train keeps >= 1."""
    if n < 2:
        return 0, 0
    n_val = min(max(1, round(n * val_fraction)), n - 1) if val_fraction else 0
    if not test_fraction or n < MIN_CLASS_FOR_TEST:
        return n_val, 0
    n_test = min(max(1, round(n * test_fraction)), n - 1 - n_val)
    return n_val, n_test


def check_splits(records: Sequence[ImageRecord], splits: Sequence[str], classes: Sequence[str]) -> None:
    """Every class must be trainable; warn about classes too small to validate."""
    train_counts = Counter(r.label for r, s in zip(records, splits, strict=True) if s == TRAIN)
    val_counts = Counter(r.label for r, s in zip(records, splits, strict=True) if s == VAL)
    missing = [c for c in classes if train_counts[c] == 0]
    if missing:
        raise DataError(
            f"classes {missing} have no readable training images; add images to their "
            f"folders or remove the folders"
        )
    for label in classes:
        if train_counts[label] + val_counts[label] < 2:
            log.warning("class %r has fewer than 2 images: it is trained on but never validated", label)


def split_counts(splits: Sequence[str]) -> dict[str, int]:
    counts = Counter(splits)
    return {s: counts[s] for s in SPLITS if counts[s]}


def write_manifest(path: Path, records: Sequence[ImageRecord], splits: Sequence[str]) -> None:
    """Write ``path,label,split`` rows (paths relative to the data root)."""
    rows = ([r.path, r.label, split] for r, split in zip(records, splits, strict=True))
    write_csv_atomic(path, ["path", "label", "split"], rows)


def read_manifest(path: Path) -> dict[str, tuple[str, str]]:
    """``{relative path: (label, split)}`` from a manifest written by ``write_manifest``."""
    try:
        with path.open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
            rows = read_csv(handle)[1]
    except OSError as exc:
        raise DataError(f"cannot read split manifest {path}: {exc.strerror}") from exc
    if rows and not {"path", "label", "split"} <= set(rows[0]):
        raise DataError(f"split manifest {path} must have the columns path,label,split")
    bad = [r["split"] for r in rows if r["split"] not in SPLITS]
    if bad:
        raise DataError(f"split manifest {path} has unknown split names {sorted(set(bad))}")
    return {r["path"]: (r["label"], r["split"]) for r in rows}


def splits_from_manifest(
    records: Sequence[ImageRecord], manifest: dict[str, tuple[str, str]], *, source: Path
) -> list[str | None]:
    """The manifest's split for each record (``None`` for images the manifest does not list)."""
    splits: list[str | None] = []
    for record in records:
        entry = manifest.get(record.path)
        if entry is not None and entry[0] != record.label:
            raise DataError(
                f"{record.path} is labelled {record.label!r} in the data folder but "
                f"{entry[0]!r} in {source}; was the data reorganised since training?"
            )
        splits.append(entry[1] if entry else None)
    return splits


def assign_folds(records: Sequence[ImageRecord], *, folds: int, seed: int) -> list[int]:
    """A stratified, seeded fold number in ``range(folds)`` for each record (``stratified_folds``,
    dealt in path order so that the assignment does not depend on the order of ``records``)."""
    if folds < 2:
        raise DataError(f"cross-validation needs at least 2 folds, got {folds}")
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        by_class[record.label].append(i)
    too_small = sorted(label for label, idx in by_class.items() if len(idx) < 2)
    if too_small:
        raise DataError(
            f"classes {too_small} have fewer than 2 images; cross-validation cannot hold them out"
        )
    for label, indices in sorted(by_class.items()):
        if len(indices) < folds:
            log.warning(
                "class %r has %s, fewer than %d folds: some folds will lack it",
                label,
                count(len(indices), "image"),
                folds,
            )
    by_path = sorted(range(len(records)), key=lambda i: records[i].path)
    dealt = stratified_folds([records[i].label for i in by_path], folds=folds, seed=seed)
    assignment = [0] * len(records)
    for i, fold in zip(by_path, dealt, strict=True):
        assignment[i] = fold
    return assignment


def stratified_folds(labels: Sequence[object], *, folds: int, seed: int) -> list[int]:
    """A fold number in ``range(folds)`` for each item, stratified by label and seeded.

    Each class (in sorted order) is shuffled with its own generator, derived from the seed and
    the class, and dealt round-robin starting where the previous class stopped, so folds differ
    in size by at most one item and adding a class does not reshuffle the others.
    """
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[str(label)].append(i)
    assignment = [0] * len(labels)
    start = 0
    for label, indices in sorted(by_class.items()):
        order = _class_rng(seed, label).permutation(len(indices))
        for position, j in enumerate(order):
            assignment[indices[j]] = (start + position) % folds
        start = (start + len(indices)) % folds
    return assignment


def write_fold_manifest(
    path: Path, records: Sequence[ImageRecord], folds_by_repeat: Sequence[Sequence[int]]
) -> None:
    """Write ``path,label,repeat,fold`` rows, one per record and repeat."""
    rows = (
        [record.path, record.label, repeat, fold]
        for repeat, folds in enumerate(folds_by_repeat)
        for record, fold in zip(records, folds, strict=True)
    )
    write_csv_atomic(path, ["path", "label", "repeat", "fold"], rows)
