"""Evaluating a classifier on one split of a labelled folder, and writing the evaluation's report."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgcls._files import SPLITS_FILE, write_json
from imgcls.data.records import DatasetScan, ImageRecord
from imgcls.data.sources import open_source
from imgcls.data.sources.imagenet import SYNSET_ID
from imgcls.data.splits import SPLITS, read_manifest, splits_from_manifest
from imgcls.errors import DataError
from imgcls.evaluation.metrics import classification_report
from imgcls.evaluation.report import Example, confident_mistakes, write_report
from imgcls.inference._scoring import score_views
from imgcls.models.features import default_cache_dir

if TYPE_CHECKING:
    from imgcls.inference.classifier import Classifier


@dataclass
class Evaluation:
    """Metrics of a classifier on one split of a labelled folder."""

    split: str
    report: dict[str, Any]
    unreadable: dict[str, str] = field(default_factory=dict)
    tta: dict[str, Any] | None = None
    mistakes: list[Example] = field(default_factory=list)
    # Whether the top class was right, per scored image (path relative to the data folder):
    # what a paired test of two models on the same images needs.
    outcomes: dict[str, bool] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return float(self.report["accuracy"])

    def to_dict(self) -> dict[str, Any]:
        data = {"split": self.split, **self.report, "unreadable": self.unreadable}
        if self.tta is not None:
            data["tta"] = self.tta
        return data


def evaluate(
    clf: Classifier,
    data: str | Path,
    *,
    split: str = "val",
    tta: bool = False,
    batch_size: int | None = None,
    workers: int | None = None,
    cache_dir: Path | None = None,
    data_format: str = "auto",
    label_set: str = "fine",
    path_column: str = "path",
    label_column: str = "label",
) -> Evaluation:
    """Metrics on one split of a labelled data set (see ``metrics.classification_report``).

    ``data`` is any source ``train`` reads (``data_format``, ``label_set``, ``path_column`` and
    ``label_column`` as there).
    ``split`` is ``val``, ``test``, ``train`` or ``all``. A split the source names (a folder,
    a manifest column, CIFAR's test batch) is used as is; otherwise the ``splits.csv``
    written at training time says which images it holds. With ``tta`` the report is for
    averaged views, and ``Evaluation.tta`` compares it with the plain centre crop.
    """
    scan = open_source(
        data,
        data_format=data_format,
        label_set=label_set,
        path_column=path_column,
        label_column=label_column,
        min_classes=1,
    )
    records = _as_model_classes(select_split(scan, split, manifest_path(clf.directory)), clf.classes)
    unknown = sorted({r.label for r in records} - set(clf.classes))
    if unknown:
        raise DataError(
            f"{scan.source} has classes the model does not know: {unknown}; "
            f"the model's classes are {clf.classes}"
        )
    paths = [scan.absolute(r) for r in records]
    scored = score_views(
        clf,
        paths,
        tta=tta,
        cache_dir=cache_dir or default_cache_dir(),
        batch_size=batch_size,
        workers=workers,
    )
    if not scored.readable.any():
        raise DataError(
            f"none of the {len(paths)} images of the {split} split in {scan.source} could be read"
        )
    index = {name: i for i, name in enumerate(clf.classes)}
    y_true = np.array(
        [index[r.label] for r, ok in zip(records, scored.readable, strict=True) if ok], dtype=np.int64
    )
    report = classification_report(y_true, scored.mean_probs, clf.classes)
    kept = [r for r, ok in zip(records, scored.readable, strict=True) if ok]
    mistakes = confident_mistakes(
        [scan.absolute(r) for r in kept], [r.path for r in kept], y_true, scored.mean_probs, clf.classes
    )
    unreadable = {records[i].path: reason for i, reason in scored.failures.items()}
    right = scored.mean_probs.argmax(axis=1) == y_true
    outcomes = {r.path: bool(ok) for r, ok in zip(kept, right, strict=True)}
    evaluation = Evaluation(split, report, unreadable, mistakes=mistakes, outcomes=outcomes)
    if tta:
        plain = classification_report(y_true, scored.probs[0], clf.classes)
        evaluation.tta = {
            "views": scored.views,
            "accuracy_without": plain["accuracy"],
            "accuracy_with": report["accuracy"],
            "log_loss_without": plain["log_loss"],
            "log_loss_with": report["log_loss"],
        }
    return evaluation


def _as_model_classes(records: list[ImageRecord], classes: list[str]) -> list[ImageRecord]:
    """Records labelled ``n01440764 tench`` for a model whose classes are the bare synset ids
    (saved before class folders named by synset got readable names): label them by the id."""
    if not classes or not all(SYNSET_ID.fullmatch(c) for c in classes):
        return records
    return [replace(r, label=r.label.split(" ", 1)[0]) for r in records]


def select_split(scan: DatasetScan, split: str, manifest: Path | None) -> list[ImageRecord]:
    """The records of ``split``: as ``manifest`` (the training run's) lists them, else its folder."""
    if split == "all":
        return scan.records
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose val, test, train or all")
    # The training run's manifest wins when it covers these images: a val split carved from
    # train/ must not be scored as train. Other data falls back to its split folders.
    splits: list[str | None] = [None] * len(scan.records)
    if manifest is not None:
        splits = splits_from_manifest(scan.records, read_manifest(manifest), source=manifest)
    if not any(splits) and split in scan.folder_splits:
        return [r for r in scan.records if r.folder_split == split]
    if not any(splits):
        raise DataError(
            f"{scan.source} has no {split}/ folder and no {SPLITS_FILE} beside the model lists its "
            f"images, so nothing says which images form the {split} split; use `split=all`"
        )
    selected = [r for r, s in zip(scan.records, splits, strict=True) if s == split]
    if not selected:
        raise DataError(f"the {split} split in {manifest} holds no images of {scan.source}")
    return selected


def manifest_path(directory: Path | None) -> Path | None:
    """The ``splits.csv`` of the run a model directory was saved by, if any."""
    if directory is None:
        return None
    for candidate in (directory / SPLITS_FILE, directory.parent / SPLITS_FILE):
        if candidate.is_file():
            return candidate
    return None


def write_evaluation_report(
    clf: Classifier, evaluation: Evaluation, data: str | Path, path: str | Path | None = None
) -> Path:
    """Write an HTML report and ``evaluation-<split>.json`` beside it; returns the report's path.

    ``path`` defaults to ``RUN_DIR/report-<split>.html`` of the run the model was loaded from.
    """
    if path is None and clf.run_dir is None:
        raise DataError("the model was not loaded from a directory: give the report's path")
    report_path = Path(path) if path else clf.run_dir / f"report-{evaluation.split}.html"  # type: ignore[operator]
    report_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(report_path.with_name(f"evaluation-{evaluation.split}.json"), evaluation.to_dict())
    write_report(
        report_path,
        title=f"imgcls evaluate: {clf.backbone} on {Path(data).name} ({evaluation.split})",
        facts=[
            ("model", str(clf.directory)),
            ("split", evaluation.split),
            ("test-time augmentation", str(evaluation.tta is not None)),
        ],
        report=evaluation.report,
        classes=clf.classes,
        mistakes=evaluation.mistakes,
    )
    return report_path
