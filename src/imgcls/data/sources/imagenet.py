"""ImageNet (ILSVRC-2012) in Kaggle's layout, read in place.

    ROOT/LOC_synset_mapping.txt           n01440764 tench, Tinca tinca
    ROOT/LOC_val_solution.csv             ImageId,PredictionString (the first word is the synset)
    ROOT/ILSVRC/Data/CLS-LOC/train/<synset>/*.JPEG
    ROOT/ILSVRC/Data/CLS-LOC/val/*.JPEG   one flat folder, labelled by the solution file

The training images form the train split and the labelled validation images the val split
(the unlabelled ``test/`` folder is left out). A class is named by its synset id and the first
of its names (``n01440764 tench``): unique, readable in reports and predictions, and sorted as
ImageNet's class indices are. The layout with ``train/<synset>/`` and ``val/<synset>/`` folders
is a plain class-folder data set whose classes get the same names (``name_synset_classes``),
from a ``LOC_synset_mapping.txt`` beside it or else the synset list that timm ships.
"""

from __future__ import annotations

import csv
import importlib.util
import re
from dataclasses import replace
from pathlib import Path

from imgcls.data.records import TRAIN, VAL, DatasetScan, ImageRecord, validate_scan
from imgcls.data.sources.folders import images_under
from imgcls.errors import DataError

SYNSETS_FILE = "LOC_synset_mapping.txt"
SYNSET_ID = re.compile(r"n\d{8}")
# timm's list of WordNet synsets and their names: read as a file, without importing timm.
TIMM_SYNSETS = ("data", "_info", "imagenet_synset_to_lemma.txt")
VAL_SOLUTION_FILE = "LOC_val_solution.csv"
IMAGES = Path("ILSVRC/Data/CLS-LOC")


def looks_like_kaggle_imagenet(path: Path) -> bool:
    return path.is_dir() and (path / SYNSETS_FILE).is_file() and (path / IMAGES).is_dir()


def read_kaggle_imagenet(source: str | Path, *, min_classes: int = 2) -> DatasetScan:
    """The labelled images of a Kaggle ImageNet download: train and val splits."""
    root = Path(source).expanduser()
    missing = [name for name in (SYNSETS_FILE, VAL_SOLUTION_FILE) if not (root / name).is_file()]
    if not (root / IMAGES / "train").is_dir():
        missing.append(f"{IMAGES}/train/")
    if missing:
        raise DataError(f"{root} is not a complete Kaggle ImageNet download: it has no {', '.join(missing)}")
    names = _synset_names(root / SYNSETS_FILE)
    scan = DatasetScan(root=root, classes=[], records=[], source=str(root), format="imagenet")
    for folder in sorted((root / IMAGES / "train").iterdir()):
        if folder.is_dir() and not folder.name.startswith("."):
            label = _class_name(folder.name, names, source=folder)
            scan.records.extend(
                ImageRecord(p, label, TRAIN) for p in images_under(folder, root, scan.ignored)
            )
    scan.records.extend(_val_records(root, names))
    scan.classes = sorted({r.label for r in scan.records})
    scan.folder_splits = {r.folder_split for r in scan.records if r.folder_split}
    validate_scan(scan, min_classes=min_classes, expected=f"{IMAGES}/train/<synset>/ images under {{root}}")
    return scan


def name_synset_classes(scan: DatasetScan) -> DatasetScan:
    """Class folders named by synset (``train/n01440764/``) get readable class names; any other
    data set is returned as it is."""
    if not scan.classes or not all(SYNSET_ID.fullmatch(c) for c in scan.classes):
        return scan
    names = _known_synset_names(scan.root)
    if not all(c in names for c in scan.classes):
        return scan
    scan.records = [replace(r, label=f"{r.label} {names[r.label]}") for r in scan.records]
    scan.classes = sorted({r.label for r in scan.records})
    return scan


def _known_synset_names(root: Path) -> dict[str, str]:
    for folder in (root, root.parent):
        if (folder / SYNSETS_FILE).is_file():
            return _synset_names(folder / SYNSETS_FILE)
    spec = importlib.util.find_spec("timm")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*TIMM_SYNSETS)
    return _synset_names(path) if path.is_file() else {}


def _synset_names(path: Path) -> dict[str, str]:
    names = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        synset, _, description = line.strip().replace("\t", " ").partition(" ")
        if not synset or not description:
            raise DataError(f"{path} line {number}: expected '<synset> <names>', got {line!r}")
        names[synset] = description.split(",")[0].strip()
    return names


def _class_name(synset: str, names: dict[str, str], *, source: Path | str) -> str:
    if synset not in names:
        raise DataError(f"{source}: synset {synset} is not in {SYNSETS_FILE}")
    return f"{synset} {names[synset]}"


def _val_records(root: Path, names: dict[str, str]) -> list[ImageRecord]:
    """The flat validation folder, each image labelled by the solution file's first synset."""
    folder = root / IMAGES / "val"
    if not folder.is_dir():
        return []
    solution = root / VAL_SOLUTION_FILE
    with solution.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
            raise DataError(f"{solution} must have the columns ImageId,PredictionString")
        labels = {
            row["ImageId"]: row["PredictionString"].split()[0] for row in reader if row["PredictionString"]
        }
    records = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        synset = labels.get(path.stem)
        if synset is None:
            raise DataError(f"{path.name} in {folder} has no label in {solution}")
        records.append(
            ImageRecord(path.relative_to(root).as_posix(), _class_name(synset, names, source=solution), VAL)
        )
    return records
