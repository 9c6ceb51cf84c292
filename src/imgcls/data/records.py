"""The record: one labelled image of a data set, whatever the source it was read from.

Every command reads a ``DatasetScan``: the records (id, label, the split the source names),
the classes, and where each image is (a file, or pixels and bytes held in memory).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from imgcls.data.images import ImageRef, MemoryImage
from imgcls.errors import DataError
from imgcls.system.wording import count

log = logging.getLogger(__name__)

TRAIN, VAL, TEST = "train", "val", "test"


# Set (to anything but 0) by --allow-outside-root: data may name files outside its own folder.
OUTSIDE_ROOT_ENV = "IMGCLS_ALLOW_OUTSIDE_ROOT"


def outside_root_allowed(allowed: bool | None = None) -> bool:
    """``allowed`` when given, else whether ``OUTSIDE_ROOT_ENV`` says so."""
    if allowed is not None:
        return allowed
    return os.environ.get(OUTSIDE_ROOT_ENV, "") not in ("", "0")


def path_in_root(root: Path, path: str, *, allowed: bool, where: str) -> Path:
    """``root / path`` for a path a data set names; one that leads outside ``root`` (an absolute
    path, ``..`` beyond it, or a symbolic link, which a downloaded data set may carry too, to a
    file elsewhere) is refused unless ``allowed``: a manifest or data set must not make imgcls
    read, copy or train on any other file of the machine."""
    target = root / path
    if not allowed and not Path(os.path.realpath(target)).is_relative_to(os.path.realpath(root)):
        raise DataError(
            f"{where} names {path}, outside {root}; a data set reads files inside its own folder "
            f"only, unless you trust it: pass --allow-outside-root (or set {OUTSIDE_ROOT_ENV}=1)"
        )
    return target


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image. ``path`` is its record id: the file's path relative to the data
    root (forward slashes), or a name inside an archive (``data_batch_1/00012``);
    ``folder_split`` is the split its source names (``None`` when the source names none)."""

    path: str
    label: str
    folder_split: str | None = None


@dataclass
class DatasetScan:
    """A labelled data set as every command reads it, whatever its source.

    Attributes:
        root: the folder record paths are relative to (a manifest's folder, a CIFAR folder).
        classes: class names, sorted.
        records: every image, in a stable order.
        folder_splits: the splits the source names for some records (a ``test/`` folder, a
            manifest's split column, CIFAR's test batch).
        ignored: entries of the source that are not images, for the warning.
        images: the images of records that are not files of their own, by record id.
        source: what the user named (a folder, a manifest file, a CIFAR archive).
        format: how it was read (one of ``config.DATA_FORMATS``).
    """

    root: Path
    classes: list[str]
    records: list[ImageRecord]
    folder_splits: set[str] = field(default_factory=set)
    ignored: list[str] = field(default_factory=list)
    images: dict[str, MemoryImage] = field(default_factory=dict)
    source: str = ""
    format: str = "folder"

    @property
    def location(self) -> str:
        """``source`` as an absolute path where it is one: what a run records to reopen it."""
        path = Path(self.source)
        return str(path.resolve()) if self.source and path.exists() else self.source

    @property
    def name(self) -> str:
        """A short name for titles: the source's file or folder name."""
        return Path(self.source).name or self.source

    def absolute(self, record: ImageRecord) -> ImageRef:
        """Where ``record``'s image is: its file, or the image held in memory."""
        held = self.images.get(record.path)
        return held if held is not None else self.root / record.path


def validate_scan(scan: DatasetScan, *, min_classes: int, expected: str) -> None:
    """Refuse a source with no images or too few classes (``expected`` describes the layout,
    with ``{root}``); log what was ignored."""
    if not scan.records:
        raise DataError(f"no images found in {scan.source}; expected {expected.format(root=scan.root)}")
    if len(scan.classes) < min_classes:
        raise DataError(
            f"only one class ({scan.classes[0]!r}) in {scan.source}: a classifier needs at least "
            f"{min_classes} classes"
        )
    if scan.ignored:
        shown = "; ".join(scan.ignored[:5])
        more = f" and {len(scan.ignored) - 5} more" if len(scan.ignored) > 5 else ""
        log.warning("ignored %s in %s: %s%s", count(len(scan.ignored), "entry"), scan.source, shown, more)
