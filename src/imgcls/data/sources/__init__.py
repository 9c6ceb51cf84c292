"""Opening any supported data source as a ``DatasetScan``: detected from what is on disk, or
named (``data_format``). ``SOURCE_KINDS`` is the one table of kinds, each with its name,
detector and reader:

- ``folder``: one sub-folder per class, optionally under ``train/`` ``val/`` ``test/``
  (``folders``);
- ``manifest``: a CSV, JSON Lines or Parquet file of ``path,label[,split]``, or a pandas
  DataFrame (``manifests``);
- ``cifar``: CIFAR-10 / CIFAR-100, python or binary version, folder or ``.tar.gz`` (``cifar``);
- ``imagenet``: ImageNet in Kaggle's layout, the flat val folder labelled by its solution file
  (``imagenet``);
- ``webdataset``: a tar shard or a folder of them, samples of ``key.jpg`` + ``key.cls``
  (``webdataset``);
- ``huggingface``: a ``save_to_disk`` folder, or Parquet files with an image and a label
  column (``huggingface``; needs the ``data`` extra).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgcls.config import DATA_FORMATS
from imgcls.data.images import ImageRef
from imgcls.data.records import DatasetScan
from imgcls.data.sources.cifar import looks_like_cifar, read_cifar
from imgcls.data.sources.folders import expand_inputs, scan_dataset
from imgcls.data.sources.huggingface import looks_like_image_parquet, looks_like_saved_dataset, read_hf_source
from imgcls.data.sources.imagenet import looks_like_kaggle_imagenet, name_synset_classes, read_kaggle_imagenet
from imgcls.data.sources.manifests import MANIFEST_SUFFIXES, ManifestColumns, read_manifest_source
from imgcls.data.sources.webdataset import looks_like_webdataset, read_webdataset
from imgcls.errors import DataError


@dataclass(frozen=True)
class ReadOptions:
    """What a reader may need besides the source itself."""

    min_classes: int = 2
    label_set: str = "fine"
    allow_outside_root: bool | None = None
    columns: ManifestColumns = field(default_factory=ManifestColumns)


@dataclass(frozen=True)
class SourceKind:
    """One kind of data source: its ``--format`` name, how a path of it is recognised, and how
    it is read. Adding a kind is its reader module and one entry in ``SOURCE_KINDS``."""

    name: str
    recognises: Callable[[Path], bool]
    read: Callable[[Any, ReadOptions], DatasetScan]


def _read_huggingface(source: Any, options: ReadOptions) -> DatasetScan:
    return read_hf_source(
        source, min_classes=options.min_classes, allow_outside_root=options.allow_outside_root
    )


def _read_manifest(source: Any, options: ReadOptions) -> DatasetScan:
    return read_manifest_source(
        source,
        min_classes=options.min_classes,
        allow_outside_root=options.allow_outside_root,
        columns=options.columns,
    )


def _read_folder(source: Any, options: ReadOptions) -> DatasetScan:
    return name_synset_classes(scan_dataset(source, min_classes=options.min_classes))


# In the order detection tries them: the first that recognises a path reads it, and a folder
# of class folders, last, takes anything.
SOURCE_KINDS: tuple[SourceKind, ...] = (
    SourceKind(
        "huggingface", lambda p: looks_like_saved_dataset(p) or looks_like_image_parquet(p), _read_huggingface
    ),
    SourceKind("manifest", lambda p: p.suffix.lower() in MANIFEST_SUFFIXES, _read_manifest),
    SourceKind(
        "cifar",
        looks_like_cifar,
        lambda s, o: read_cifar(s, label_set=o.label_set, min_classes=o.min_classes),
    ),
    SourceKind(
        "imagenet",
        looks_like_kaggle_imagenet,
        lambda s, o: read_kaggle_imagenet(s, min_classes=o.min_classes),
    ),
    SourceKind(
        "webdataset", looks_like_webdataset, lambda s, o: read_webdataset(s, min_classes=o.min_classes)
    ),
    SourceKind("folder", lambda p: True, _read_folder),
)
_BY_NAME = {kind.name: kind for kind in SOURCE_KINDS}


def detect_format(source: str | Path | Any) -> str:
    """The format of ``source``: a DataFrame is a manifest; a path is the first of
    ``SOURCE_KINDS`` that recognises it."""
    if not isinstance(source, str | Path):
        return "manifest"
    path = Path(source).expanduser()
    return next(kind.name for kind in SOURCE_KINDS if kind.recognises(path))


def prediction_inputs(inputs: Sequence[str | Path]) -> list[ImageRef]:
    """The images to predict: files, folders (searched recursively) and glob patterns as
    ``expand_inputs`` finds them, and every image of a data source that is not a plain folder
    (a manifest, a CIFAR distribution, shards, a Hugging Face data set)."""
    found: list[ImageRef] = []
    for item in inputs:
        path = Path(item).expanduser()
        found_format = detect_format(path) if path.exists() else "folder"
        if found_format != "folder":
            scan = open_source(path, data_format=found_format, min_classes=1)
            found.extend(scan.absolute(record) for record in scan.records)
        else:
            found.extend(expand_inputs([str(item)]))
    return found


def open_source(
    source: str | Path | Any,
    *,
    data_format: str = "auto",
    label_set: str = "fine",
    min_classes: int = 2,
    allow_outside_root: bool | None = None,
    path_column: str = "path",
    label_column: str = "label",
) -> DatasetScan:
    """Every labelled image of ``source``.

    Args:
        source: a folder, a manifest file, a CIFAR folder or archive, or a pandas DataFrame.
        data_format: one of ``DATA_FORMATS``; ``auto`` detects it.
        label_set: CIFAR-100's ``fine`` (100) or ``coarse`` (20) classes.
        min_classes: fewer classes than this is an error.
        allow_outside_root: whether a manifest or a Hugging Face data set may name image files
            outside its own folder (default: only with ``--allow-outside-root``, or
            ``IMGCLS_ALLOW_OUTSIDE_ROOT=1``).
        path_column: a manifest's column of image paths.
        label_column: a manifest's column of labels.
    """
    if data_format not in DATA_FORMATS:
        raise DataError(f"unknown `data_format` {data_format!r}; choose one of {', '.join(DATA_FORMATS)}")
    kind = _BY_NAME[detect_format(source) if data_format == "auto" else data_format]
    options = ReadOptions(
        min_classes, label_set, allow_outside_root, ManifestColumns(path_column, label_column)
    )
    return kind.read(source, options)
