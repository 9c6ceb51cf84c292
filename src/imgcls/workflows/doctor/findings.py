"""What ``imgcls doctor`` reports: a finding per problem, the whole diagnosis, and the
readable images it examined."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.data.fingerprints import Fingerprint
from imgcls.data.images import ImageRef
from imgcls.data.records import ImageRecord

KINDS = (
    "unreadable", "ignored", "conflicting labels", "leakage", "duplicate", "mislabel", "outlier",
    "imbalance", "tiny", "extreme aspect", "grey",
)  # fmt: skip
# What --write-clean leaves out (mislabels are relabelled instead with --relabel).
CLEANED_KINDS = ("conflicting labels", "leakage", "duplicate", "mislabel", "outlier")


@dataclass
class Finding:
    kind: str
    ids: list[str]  # record ids of the images concerned
    splits: list[str]
    labels: list[str]
    score: float  # how sure or how bad; findings of a kind are ranked by it, highest first
    action: str
    suggested_label: str | None = None
    detail: str = ""


@dataclass
class Diagnosis:
    data: str
    backbone: str
    images: int
    findings: list[Finding]
    leakage: dict[str, dict[str, Any]]
    calibration: dict[str, Any]
    label_check: dict[str, Any]
    timing: dict[str, float] = field(default_factory=dict)
    output: Path | None = None
    # The out-of-fold class probabilities behind the mislabel check, with each row's record id
    # and label index (for comparing other methods on the same probabilities).
    out_of_fold: np.ndarray | None = None
    out_of_fold_ids: list[str] = field(default_factory=list)
    out_of_fold_labels: np.ndarray | None = None

    def counts(self) -> dict[str, int]:
        found = Counter(f.kind for f in self.findings)
        return {kind: found[kind] for kind in KINDS if found[kind]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "backbone": self.backbone,
            "images": self.images,
            "counts": self.counts(),
            "leakage": self.leakage,
            "calibration": self.calibration,
            "label_check": self.label_check,
            "timing": self.timing,
            "findings": [asdict(f) for f in self.findings],
        }


@dataclass
class DoctorImages:
    """The readable images: their records, references, splits, features and fingerprints."""

    records: list[ImageRecord]
    refs: list[ImageRef]
    splits: list[str]
    features: np.ndarray
    prints: list[Fingerprint]
    classes: list[str]

    @cached_property
    def labels(self) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[r.label] for r in self.records], dtype=np.int64)

    def ids(self, rows: Iterable[int]) -> list[str]:
        return [self.records[i].path for i in rows]
