"""Writing a data set in another layout: class folders, a manifest, or WebDataset shards.

Images that are files are copied as they are; images held in memory are written as their
encoded bytes, or as PNG (lossless) where only pixels exist. Splits the source names are kept
(``train/``, ``val/``, ``test/`` folders; a manifest's split column; one set of shards per
split). Nothing is overwritten: the output must not exist yet.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from imgcls.data.images import MemoryImage
from imgcls.data.records import DatasetScan, ImageRecord
from imgcls.data.webdataset import IMAGE_SUFFIXES, INFO_FILE
from imgcls.errors import DataError

TARGETS = ("folder", "manifest", "webdataset")
SHARD_SAMPLES = 10_000


@dataclass(frozen=True)
class Converted:
    """What ``convert`` wrote."""

    output: Path
    images: int
    files: int  # image files, manifest rows' files or shards written


def convert(
    scan: DatasetScan, output: str | Path, *, to: str, shard_samples: int = SHARD_SAMPLES
) -> Converted:
    """Write ``scan`` to ``output`` as ``to`` (one of ``TARGETS``)."""
    if to not in TARGETS:
        raise DataError(f"unknown conversion target {to!r}; choose one of {', '.join(TARGETS)}")
    output = Path(output)
    if output.exists():
        raise DataError(f"{output} already exists; convert writes a new folder or file only")
    if to == "folder":
        return _to_folder(scan, output)
    if to == "manifest":
        return _to_manifest(scan, output)
    return _to_shards(scan, output, shard_samples)


def _encoded(scan: DatasetScan, record: ImageRecord) -> tuple[bytes | Path, str]:
    """The image's file (to copy) or encoded bytes, and its file extension."""
    image = scan.absolute(record)
    if isinstance(image, Path):
        return image, image.suffix.lower()
    data = image.encoded()
    if data is not None:
        kind = Image.open(io.BytesIO(data)).format or "PNG"
        return data, {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}.get(kind, f".{kind.lower()}")
    return _png(image), ".png"


def _png(image: MemoryImage) -> bytes:
    buffer = io.BytesIO()
    image.rgb().save(buffer, "PNG")
    return buffer.getvalue()


def _safe_name(record_id: str) -> str:
    """A file name from a record id: path separators and odd characters become ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", Path(record_id).with_suffix("").as_posix()).strip("_")


def _write(content: bytes | Path, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, Path):
        shutil.copyfile(content, path)
    else:
        path.write_bytes(content)


def _split_of(scan: DatasetScan, record: ImageRecord) -> str | None:
    """The record's split folder: its own, ``train`` when others have one, else none."""
    if not scan.folder_splits:
        return None
    return record.folder_split or "train"


def _to_folder(scan: DatasetScan, output: Path) -> Converted:
    for record in scan.records:
        content, suffix = _encoded(scan, record)
        split = _split_of(scan, record)
        folder = output / split / record.label if split else output / record.label
        _write(content, folder / f"{_safe_name(record.path)}{suffix}")
    return Converted(output, len(scan.records), len(scan.records))


def _to_manifest(scan: DatasetScan, output: Path) -> Converted:
    """``output`` is the manifest (.csv or .jsonl); images not on disk go to ``images/`` beside it."""
    if output.suffix.lower() not in (".csv", ".jsonl"):
        raise DataError(f"a manifest is written as .csv or .jsonl, got {output.name}")
    rows = []
    written = 0
    for record in scan.records:
        content, suffix = _encoded(scan, record)
        if isinstance(content, Path):
            path = str(content.resolve())
        else:
            target = output.parent / "images" / f"{_safe_name(record.path)}{suffix}"
            _write(content, target)
            written += 1
            path = target.relative_to(output.parent).as_posix()
        rows.append({"path": path, "label": record.label, "split": record.folder_split or ""})
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".jsonl":
        output.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    else:
        import csv

        with output.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["path", "label", "split"])
            writer.writeheader()
            writer.writerows(rows)
    return Converted(output, len(rows), written)


def _to_shards(scan: DatasetScan, output: Path, shard_samples: int) -> Converted:
    """``<split>-NNNNNN.tar`` shards of ``key.<ext>`` + ``key.cls`` + ``key.json`` (the record's
    id and label), and an ``_info.json`` with the class names and each split's shards, as
    timm's WebDataset reader reads them."""
    index = {name: i for i, name in enumerate(scan.classes)}
    by_split: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in scan.records:
        by_split[_split_of(scan, record) or "train"].append(record)
    output.mkdir(parents=True)
    splits = {}
    shards = 0
    for split, records in sorted(by_split.items()):
        names, lengths = [], []
        for number, chunk in enumerate(_chunks(records, shard_samples)):
            name = f"{split}-{number:06d}.tar"
            _write_shard(output / name, scan, chunk, index)
            names.append(name)
            lengths.append(len(chunk))
        splits[split] = {
            "name": split,
            "num_samples": len(records),
            "filenames": names,
            "shard_lengths": lengths,
        }
        shards += len(names)
    info = {"name": scan.name, "num_classes": len(scan.classes), "classes": scan.classes, "splits": splits}
    (output / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return Converted(output, len(scan.records), shards)


def _chunks(records: list[ImageRecord], size: int) -> Iterator[list[ImageRecord]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


def _write_shard(path: Path, scan: DatasetScan, records: list[ImageRecord], index: dict[str, int]) -> None:
    with tarfile.open(path, "w") as tar:
        for number, record in enumerate(records):
            content, suffix = _encoded(scan, record)
            image = content.read_bytes() if isinstance(content, Path) else content
            if suffix.lstrip(".") not in IMAGE_SUFFIXES:  # a kind the shard readers do not know
                image, suffix = _png(MemoryImage(record.path, data=image)), ".png"
            key = f"{number:08d}"
            meta = json.dumps({"id": record.path, "label": record.label}).encode()
            for name, data in ((f"{key}{suffix}", image), (f"{key}.cls", str(index[record.label]).encode())):
                _add(tar, name, data)
            _add(tar, f"{key}.json", meta)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    tar.addfile(member, io.BytesIO(data))
