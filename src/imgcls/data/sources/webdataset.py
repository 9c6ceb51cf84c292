"""WebDataset shards: tar files whose members are grouped into samples by key.

A sample is the members that share a key (the member's path up to the first dot of its file
name): one image (``key.jpg``, ``.jpeg``, ``.png`` or ``.webp``) and one label, ``key.cls``
(a class index), ``key.txt`` (a class name) or ``key.json`` (``{"label": ...}``, a name or an
index). Class indices are named by the ``classes`` list of the shards' ``_info.json`` where
there is one (as ``imgcls convert`` writes it), else by the index itself.

The source is one ``.tar`` file or a folder of them. A shard whose name starts with ``train``,
``val`` (``valid``, ``validation``) or ``test`` holds that split, as do the shards that
``_info.json`` lists under ``splits``. Shards are read with the standard library's tarfile.
A sample's image is not kept in memory: its record points at the bytes inside the shard,
read when the image is (a compressed shard, which cannot be read from the middle, is held in
memory instead). Its feature-cache key is the same as the image file's.

Under torchrun each process extracts the images of whole shards (``share_by_shard``).
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imgcls.data.images import ArchiveMember, MemoryImage, is_image_path
from imgcls.data.records import DatasetScan, ImageRecord, validate_scan
from imgcls.data.sources.folders import SPLIT_FOLDERS, split_word
from imgcls.errors import DataError, first_line

INFO_FILE = "_info.json"
IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")
LABEL_SUFFIXES = ("cls", "txt", "json")


def looks_like_webdataset(path: Path) -> bool:
    """A ``.tar`` file, or a folder of them holding no sub-folders and no loose images."""
    if path.is_file():
        return path.suffix == ".tar"
    if not path.is_dir() or not any(path.glob("*.tar")):
        return False
    return not any(p.is_dir() or is_image_path(p) for p in path.iterdir())


def read_webdataset(source: str | Path, *, min_classes: int = 2) -> DatasetScan:
    """Every labelled sample of a shard or a folder of shards."""
    path = Path(source).expanduser()
    shards = [path] if path.is_file() else sorted(path.glob("*.tar"))
    if not shards:
        raise DataError(f"{path} holds no .tar shards")
    info = _info(path if path.is_dir() else path.parent)
    splits = _shard_splits(info)
    names: list[str] = [str(c) for c in info.get("classes", [])]
    scan = DatasetScan(root=shards[0].parent, classes=[], records=[], source=str(path), format="webdataset")
    for shard in shards:
        word = split_word(shard.name)
        split = splits.get(shard.name) or (SPLIT_FOLDERS[word] if word else None)
        for key, members in _samples(shard):
            record_id = f"{shard.name}/{key}"
            image, label = _image_and_label(members, shard=shard, key=key, names=names)
            scan.records.append(ImageRecord(record_id, label, split))
            stored = {"member": image} if isinstance(image, ArchiveMember) else {"data": image}
            scan.images[record_id] = MemoryImage(record_id, **stored)
    scan.classes = sorted({r.label for r in scan.records})
    scan.folder_splits = {r.folder_split for r in scan.records if r.folder_split}
    validate_scan(scan, min_classes=min_classes, expected="WebDataset samples (key.jpg + key.cls) in {root}")
    return scan


def _info(folder: Path) -> dict[str, Any]:
    path = folder / INFO_FILE
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{path} is not valid JSON: {first_line(exc)}") from None
    return info if isinstance(info, dict) else {}


def _shard_splits(info: dict[str, Any]) -> dict[str, str]:
    """Shard file name -> split, from ``_info.json``'s ``splits``."""
    found = {}
    for name, split in (info.get("splits") or {}).items():
        for shard in split.get("filenames", []):
            if name.lower() in SPLIT_FOLDERS:
                found[Path(shard).name] = SPLIT_FOLDERS[name.lower()]
    return found


Member = bytes | ArchiveMember  # a label's bytes, or where an image's bytes are


def _samples(shard: Path) -> Iterator[tuple[str, dict[str, Member]]]:
    """``(key, {suffix: member})`` for each sample of ``shard``, in the shard's order; image
    members as their place in the shard where it is uncompressed."""
    samples: dict[str, dict[str, Member]] = {}
    try:
        seekable = _uncompressed(shard)
        with tarfile.open(shard) as archive:
            for member in archive:
                if not member.isfile():
                    continue
                folder, _, name = member.name.rpartition("/")
                stem, dot, suffix = name.partition(".")
                if not dot or stem.startswith("_"):
                    continue
                key = f"{folder}/{stem}" if folder else stem
                suffix = suffix.lower()
                value: Member
                if seekable and suffix in IMAGE_SUFFIXES:
                    value = ArchiveMember(shard, member.offset_data, member.size)
                else:
                    value = archive.extractfile(member).read()  # type: ignore[union-attr]
                samples.setdefault(key, {})[suffix] = value
            if seekable and not _ends_with_end_marker(shard, archive.offset):
                raise DataError(
                    f"shard {shard} stops after {len(samples)} samples without the end-of-archive "
                    "marker: it was cut short (an interrupted download or copy?); the samples it "
                    "lost cannot be counted, so it is not read. Copy or write it again"
                )
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot read shard {shard}: {exc}") from exc
    yield from samples.items()


def _ends_with_end_marker(shard: Path, end: int) -> bool:
    """Whether a plain tar's last member is followed by the zero block that ends an archive; a
    tar cut at a member boundary reads without error, only shorter. (A compressed tar cut short
    fails to decompress instead.)"""
    with shard.open("rb") as handle:
        handle.seek(end)
        block = handle.read(tarfile.BLOCKSIZE)
    return len(block) == tarfile.BLOCKSIZE and not block.strip(b"\0")


def _uncompressed(shard: Path) -> bool:
    """Whether ``shard`` is a plain tar (its members' bytes can be read in place)."""
    try:
        with tarfile.open(shard, "r:"):
            return True
    except tarfile.ReadError:
        return False


def share_by_shard(scan: DatasetScan, rank: int, world_size: int, workers: int) -> list[int] | None:
    """Rank ``rank``'s records (indices into ``scan.records``) when ``scan`` comes from shards:
    those of every ``world_size``-th shard, so that each process reads only its own shards.
    ``None`` for other sources. Refuses fewer shards than processes x loader workers: some
    would have no shard to read (with webdataset's own loader, such a worker hangs the run)."""
    archives: dict[Path, int] = {}
    of_record: list[int] = []
    for record in scan.records:
        image = scan.images.get(record.path)
        if image is None or image.member is None:
            return None
        of_record.append(archives.setdefault(image.member.archive, len(archives)))
    readers = world_size * max(1, workers)
    if len(archives) < readers:
        raise DataError(
            f"{scan.source} has {len(archives)} shards for {world_size} processes x "
            f"{max(1, workers)} loader workers: each needs a shard of its own. Write more, smaller "
            "shards (imgcls convert --to webdataset --shard-samples N), or start fewer processes or workers"
        )
    return [i for i, shard in enumerate(of_record) if shard % world_size == rank]


def _label_value(data: bytes, suffix: str, *, shard: Path, key: str) -> Any:
    try:
        text = data.decode("utf-8").strip()
        if suffix != "json":
            return text
        content = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DataError(f"{shard}: sample {key}.{suffix} is not readable text ({exc})") from None
    if not isinstance(content, dict) or "label" not in content:
        raise DataError(f'{shard}: sample {key}.json has no "label"')
    return content["label"]


def _image_and_label(
    members: dict[str, Member], *, shard: Path, key: str, names: list[str]
) -> tuple[Member, str]:
    image = next((members[s] for s in IMAGE_SUFFIXES if s in members), None)
    if image is None:
        raise DataError(f"{shard}: sample {key} has no image ({', '.join('.' + s for s in IMAGE_SUFFIXES)})")
    suffix = next((s for s in LABEL_SUFFIXES if s in members), None)
    if suffix is None:
        raise DataError(f"{shard}: sample {key} has no label ({', '.join('.' + s for s in LABEL_SUFFIXES)})")
    value = _label_value(members[suffix], suffix, shard=shard, key=key)  # type: ignore[arg-type]
    if suffix == "cls" or isinstance(value, int):
        try:
            index = int(value)
        except ValueError:
            raise DataError(f"{shard}: sample {key}.cls holds {value!r}, not a class index") from None
        return image, names[index] if 0 <= index < len(names) else str(index)
    if not value:
        raise DataError(f"{shard}: sample {key} has an empty label")
    return image, str(value)
