"""Finding labelled images in a folder tree.

Two layouts are understood:

- class folders directly: ``DATA/<class>/**/<image>``
- split folders: ``DATA/train/<class>/...`` plus optional ``val/`` (or ``valid/``,
  ``validation/``) and ``test/``.

Paths are recorded relative to ``DATA`` with forward slashes, so a split manifest written on
one machine is valid on another.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from imgcls._files import CONFIG_FILE, MODEL_SUBDIR, RUN_CONFIG_FILE
from imgcls.data.images import is_image_path
from imgcls.data.records import TEST, TRAIN, VAL, DatasetScan, ImageRecord, validate_scan
from imgcls.errors import DataError
from imgcls.system.wording import count, join_names

log = logging.getLogger(__name__)

FOLDER_LAYOUT = "one sub-folder per class (e.g. {root}/cats/img1.jpg), optionally under train/ and val/"

SPLIT_FOLDERS = {"train": TRAIN, "val": VAL, "valid": VAL, "validation": VAL, "test": TEST}


def split_word(name: str) -> str | None:
    """The split word a file name starts with (``train-000000.tar``, ``validation-00000.parquet``),
    as written, or ``None``; ``SPLIT_FOLDERS`` maps it to the split."""
    match = re.match(r"[a-z]+", name.lower())
    return match.group(0) if match and match.group(0) in SPLIT_FOLDERS else None


def scan_dataset(root: str | Path, *, min_classes: int = 2) -> DatasetScan:
    """List every image under ``root`` with its class; validate the class layout."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist or is not a folder")
    if _is_run_dir(root):
        raise DataError(
            f"{root} is an imgcls run directory (a trained model), not a data folder; "
            "did you swap DATA and MODEL?"
        )
    split_dirs = _split_dirs(root)
    scan = DatasetScan(root=root, classes=[], records=[], source=str(root), format="folder")
    if split_dirs:
        if TRAIN not in split_dirs.values():
            raise DataError(
                f"{root} has {', '.join(sorted(split_dirs))}/ but no train/ folder; put the "
                f"training images in {root / 'train'}/<class>/"
            )
        # train first: the val/test classes are checked against it
        for folder, split in sorted(split_dirs.items(), key=lambda item: item[1] != TRAIN):
            _scan_class_folders(root / folder, root, scan, folder_split=split)
        scan.folder_splits = set(split_dirs.values())
        _note_stray_entries(root, set(split_dirs), scan)
    else:
        _scan_class_folders(root, root, scan, folder_split=None)
    if len(scan.classes) < min_classes:
        _explain_layout(root, scan)
    validate_scan(scan, min_classes=min_classes, expected=FOLDER_LAYOUT)
    return scan


def _explain_layout(root: Path, scan: DatasetScan) -> None:
    """Name the usual mistakes behind a folder with too few classes: one class folder given
    instead of the data set, images with no class folders."""
    if scan.records:
        return
    loose = [p for p in root.iterdir() if p.is_file() and is_image_path(p)]
    if not loose:
        return
    found = f"{count(len(loose), 'image')} directly in {root} but no class sub-folders"
    guess = _data_set_above(root)
    if guess is not None:
        parent, classes = guess
        raise DataError(
            f"{root} looks like a single class ({found}); did you mean {parent}, which has "
            f"classes {join_names(classes)}?"
        )
    raise DataError(f"found {found}; put each class's images in its own sub-folder ({root}/<class>/...)")


def holds_images(folder: Path, depth: int = 2) -> bool:
    """Whether ``folder`` or its sub-folders, ``depth`` levels down, hold an image file."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if any(p.is_file() and is_image_path(p) for p in entries):
        return True
    return depth > 0 and any(p.is_dir() and holds_images(p, depth - 1) for p in entries)


def _is_run_dir(path: Path) -> bool:
    return (path / RUN_CONFIG_FILE).is_file() or (path / MODEL_SUBDIR / CONFIG_FILE).is_file()


def _data_set_above(folder: Path) -> tuple[Path, list[str]] | None:
    """The data set ``folder`` is one class of, and its classes: its parent when ``folder``
    and at least one sibling hold images (the parent's parent when the parent is a split
    folder such as ``train/``)."""
    parent = folder.resolve().parent
    classes = sorted(
        d.name
        for d in parent.iterdir()
        if d.is_dir() and not d.name.startswith(".") and holds_images(d, depth=0)
    )
    if len(classes) < 2 or folder.resolve().name not in classes:
        return None
    return (parent.parent if parent.name.lower() in SPLIT_FOLDERS else parent), classes


def _split_dirs(root: Path) -> dict[str, str]:
    dirs = {
        p.name: SPLIT_FOLDERS[p.name.lower()]
        for p in root.iterdir()
        if p.is_dir() and p.name.lower() in SPLIT_FOLDERS
    }
    by_split: dict[str, list[str]] = {}
    for name, split in dirs.items():
        by_split.setdefault(split, []).append(name)
    for split, names in by_split.items():
        if len(names) > 1:
            raise DataError(f"{root} has several {split} folders ({', '.join(sorted(names))}); keep one")
    return dirs


def _scan_class_folders(folder: Path, root: Path, scan: DatasetScan, *, folder_split: str | None) -> None:
    classes = set(scan.classes)
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            scan.ignored.append(f"{_rel(entry, root)} (not inside a class folder)")
            continue
        if _is_run_dir(entry):
            scan.ignored.append(f"{_rel(entry, root)} (an imgcls run directory, not a class)")
            continue
        images = images_under(entry, root, scan.ignored)
        if not images:
            scan.ignored.append(f"{_rel(entry, root)} (an empty class folder: no images)")
            continue
        if folder_split not in (None, TRAIN) and entry.name not in classes:
            raise DataError(
                f"class folder {entry} has no counterpart in the training data "
                f"({root / 'train'}); every {folder_split} class must also be a train class"
            )
        classes.add(entry.name)
        scan.records.extend(ImageRecord(path, entry.name, folder_split) for path in images)
    scan.classes = sorted(classes)


def images_under(folder: Path, root: Path, ignored: list[str]) -> list[str]:
    """Image files anywhere under ``folder``, relative to ``root``; other files go to ``ignored``."""
    images = []
    for path in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if is_listed_image(path):
            images.append(_rel(path, root))
        elif _dangling(path):
            ignored.append(f"{_rel(path, root)} (a symbolic link to nothing)")
        elif path.is_file():
            ignored.append(f"{_rel(path, root)} (not an image file extension)")
    return images


def is_listed_image(path: Path) -> bool:
    """An image file, or an image's name on a link that leads nowhere (to a missing file, or
    round in a loop): such a link is read like any image and reported with the reason."""
    return is_image_path(path) and (path.is_file() or _dangling(path))


def _dangling(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def _note_stray_entries(root: Path, split_folders: set[str], scan: DatasetScan) -> None:
    for entry in sorted(root.iterdir()):
        if entry.name not in split_folders and not entry.name.startswith("."):
            scan.ignored.append(f"{_rel(entry, root)} (not a train/val/test folder)")


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def expand_inputs(inputs: list[str] | tuple[str, ...]) -> list[Path]:
    """Files, folders (searched recursively) and glob patterns to a sorted list of image files.

    A path that does not exist and a pattern that matches nothing are errors that name it.
    """
    import glob

    found: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*")) if is_listed_image(p))
        elif path.is_file() or path.is_symlink():  # a broken link is reported when it is read
            found.append(path)
        elif glob.has_magic(item):
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
            if not matches:
                raise DataError(f"the pattern {item!r} matches no files")
            found.extend(p for p in matches if is_listed_image(p))
        else:
            raise DataError(f"{item} does not exist")
    return list(dict.fromkeys(found))
