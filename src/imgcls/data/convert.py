"""Writing a data set in another layout: class folders, a manifest, or WebDataset shards.

Images that are files are copied as they are; images held in memory are written as their
encoded bytes, or as PNG (lossless) where only pixels exist. Splits the source names are kept
(``train/``, ``val/``, ``test/`` folders; a manifest's split column; one set of shards per
split). Nothing is overwritten: the output must not exist yet.

Labels and record ids name folders and files only through ``path_component`` (no separators,
no ``..``, nothing outside the output), each folder's names kept distinct by a
``NameAllocator``: a label written under another name, or a file numbered because its name came
out the same as another's, is reported in ``Converted``, never silently merged or overwritten.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from imgcls._files import NameAllocator, write_csv_atomic, write_text_atomic
from imgcls.data.images import MemoryImage
from imgcls.data.records import DatasetScan, ImageRecord
from imgcls.data.sources.manifests import listed_path
from imgcls.data.sources.webdataset import IMAGE_SUFFIXES, INFO_FILE
from imgcls.errors import DataError, first_line

TARGETS = ("folder", "manifest", "webdataset")
SHARD_SAMPLES = 10_000
IMAGES_FOLDER = "images"
MANIFEST_COLUMNS = ("path", "label", "split")


@dataclass(frozen=True)
class Converted:
    """What ``convert`` wrote, and the data names it could not use as they were."""

    output: Path
    images: int
    files: int  # image files, manifest rows' files or shards written
    # (class label, folder name) for labels that are not a safe, distinct folder name as given.
    renamed_labels: list[tuple[str, str]] = field(default_factory=list)
    # (record id, file name) for images whose name came out the same as another's and was numbered.
    numbered_files: list[tuple[str, str]] = field(default_factory=list)


def convert(
    scan: DatasetScan, output: str | Path, *, to: str, shard_samples: int = SHARD_SAMPLES
) -> Converted:
    """Write ``scan`` to ``output`` as ``to`` (one of ``TARGETS``).

    Everything is written into a hidden ``.NAME.partial`` folder beside ``output`` and moved into
    place at the end, so a killed conversion leaves nothing that looks complete (the next one
    starts that folder afresh)."""
    if to not in TARGETS:
        raise DataError(f"unknown conversion target {to!r}; choose one of {', '.join(TARGETS)}")
    output = Path(output)
    if output.exists():
        raise DataError(f"{output} already exists; convert writes a new folder or file only")
    partial = output.with_name(f".{output.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        if to == "folder":
            done = _to_folder(scan, partial)
        elif to == "manifest":
            done = _to_manifest(scan, partial, output)
        else:
            done = _to_shards(scan, partial, shard_samples)
        _move_into_place(partial, output, manifest=to == "manifest")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return replace(done, output=output)


def _move_into_place(partial: Path, output: Path, *, manifest: bool) -> None:
    if not manifest:
        partial.replace(output)
        return
    images = partial / IMAGES_FOLDER
    if images.is_dir():
        images.replace(output.parent / IMAGES_FOLDER)
    (partial / output.name).replace(output)  # last: the manifest's presence means it is complete
    partial.rmdir()


def _encoded(scan: DatasetScan, record: ImageRecord) -> tuple[bytes | Path, str]:
    """The image's file (to copy) or encoded bytes, and its file extension."""
    image = scan.absolute(record)
    if isinstance(image, Path):
        return image, image.suffix.lower()
    try:
        data = image.encoded()
        if data is None:
            return _png(image), ".png"
        kind = Image.open(io.BytesIO(data)).format or "PNG"
    except UnidentifiedImageError:
        raise DataError(f"{scan.source}: the image of {record.path} is not an image file") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{scan.source}: cannot read the image of {record.path}: {first_line(exc)}") from None
    return data, {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}.get(kind, f".{kind.lower()}")


def _png(image: MemoryImage) -> bytes:
    buffer = io.BytesIO()
    image.rgb().save(buffer, "PNG")
    return buffer.getvalue()


def _file_stem(record_id: str) -> str:
    """A record id without its extension, its folders joined into the name (``ants/1.jpg`` is
    ``ants_1``), so images from different folders stay apart."""
    return Path(record_id).with_suffix("").as_posix()


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
    labels = NameAllocator()
    files: dict[Path, NameAllocator] = defaultdict(NameAllocator)
    for record in scan.records:
        content, suffix = _encoded(scan, record)
        split = _split_of(scan, record)
        folder = (output / split if split else output) / labels(record.label)
        _write(content, folder / files[folder].unique(_file_stem(record.path), suffix))
    numbered = [pair for names in files.values() for pair in names.collided]
    return Converted(output, len(scan.records), len(scan.records), labels.changed, numbered)


def _to_manifest(scan: DatasetScan, partial: Path, output: Path) -> Converted:
    """``output`` is the manifest (.csv or .jsonl). An image file inside the manifest's folder is
    listed by its path relative to it; any other image (held in memory, or a file elsewhere) is
    written to ``images/`` beside the manifest, so the manifest never names a file outside its
    folder and reads without ``--allow-outside-root``."""
    if output.suffix.lower() not in (".csv", ".jsonl"):
        raise DataError(f"a manifest is written as .csv or .jsonl, got {output.name}")
    if (output.parent / IMAGES_FOLDER).exists() and any(_copied(scan, r, output) for r in scan.records):
        raise DataError(f"{output.parent / IMAGES_FOLDER} already exists; convert writes the images "
                        "this manifest needs there, so choose another folder for the manifest")  # fmt: skip
    names = NameAllocator()
    rows, written = [], 0
    for record in scan.records:
        content, suffix = _encoded(scan, record)
        path = listed_path(content, output) if isinstance(content, Path) else None
        if path is None:
            path = f"{IMAGES_FOLDER}/{names.unique(_file_stem(record.path), suffix)}"
            _write(content, partial / path)
            written += 1
        rows.append([path, record.label, record.folder_split or ""])
    partial.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".jsonl":
        lines = (json.dumps(dict(zip(MANIFEST_COLUMNS, row, strict=True))) + "\n" for row in rows)
        write_text_atomic(partial / output.name, "".join(lines))
    else:
        write_csv_atomic(partial / output.name, MANIFEST_COLUMNS, rows)
    return Converted(output, len(rows), written, [], names.collided)


def _copied(scan: DatasetScan, record: ImageRecord, manifest: Path) -> bool:
    """Whether a manifest at ``manifest`` needs a copy of the record's image in ``images/``."""
    image = scan.absolute(record)
    return not isinstance(image, Path) or listed_path(image, manifest) is None


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
