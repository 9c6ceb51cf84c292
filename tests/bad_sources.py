"""A corpus of hostile data sources, generated at test time: manifests, shards, CIFAR batches
and Hugging Face files whose names, paths and structure are built to escape the output, read
other files, inject spreadsheet formulas, exhaust memory or crash a reader.

Each writer makes one source in a folder and returns its path; the tests in
tests/data/test_bad_sources.py say what each must produce (a clear error, a reported count,
files written only where asked).
"""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np

from tests.conftest import COLOURS, make_image

# Labels that a path join would take out of the output folder, or onto a reserved name.
ESCAPING_LABELS = ("../../escaped", "/tmp/absolute-escape", "..", "CON", "a/../../b")
# Labels a spreadsheet would run as formulas (OWASP's list of leading characters).
FORMULA_LABELS = ("=cmd|' /C calc'!A0", '+HYPERLINK("http://x")', "-2+3", "@SUM(A1)", "\tTAB", "'=quoted")
# File names that become one name once path characters are replaced.
CLASHING_NAMES = ("img 1.png", "img_1.png", "img@1.png", "é.png", "IMG_1.png")


def png_bytes(seed: int, colour: tuple[int, int, int] = COLOURS["red"]) -> bytes:
    buffer = io.BytesIO()
    make_image(colour, seed=seed, size=16).save(buffer, "PNG")
    return buffer.getvalue()


def labelled_manifest(folder: Path, labels: tuple[str, ...], per_label: int = 3) -> Path:
    """``folder/list.csv`` listing ``per_label`` images in ``folder/images`` for each label."""
    images = folder / "images"
    images.mkdir(parents=True)
    rows = ["path,label"]
    for n, label in enumerate(labels):
        for i in range(per_label):
            name = f"{n}_{i}.png"
            (images / name).write_bytes(png_bytes(10 * n + i))
            quoted = '"' + label.replace('"', '""') + '"'
            rows.append(f"images/{name},{quoted}")
    manifest = folder / "list.csv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return manifest


def manifest_naming(folder: Path, path: str) -> Path:
    """A manifest of two good images and one row naming ``path`` (outside, a device, ...)."""
    folder.mkdir(parents=True)
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(png_bytes(len(name)))
    (folder / "list.csv").write_text(f"path,label\na.png,x\nb.png,y\n{path},y\n", encoding="utf-8")
    return folder / "list.csv"


def deeply_nested_jsonl(folder: Path, depth: int = 100_000) -> Path:
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(png_bytes(1))
    path = folder / "list.jsonl"
    path.write_text('{"path": "a.png", "label": "x"}\n' + "[" * depth + "\n", encoding="utf-8")
    return path


def shards_with_labels(folder: Path, labels: tuple[str, ...]) -> Path:
    """One shard whose samples carry ``.txt`` labels (several images per label)."""
    folder.mkdir(parents=True)
    shard = folder / "train-000000.tar"
    with tarfile.open(shard, "w") as tar:
        for n, label in enumerate(labels * 2):
            _add(tar, f"{n:04d}.png", png_bytes(n))
            _add(tar, f"{n:04d}.txt", label.encode())
    return shard


def shard_cut_at_a_member_boundary(folder: Path, samples: int = 16, kept: int = 10) -> Path:
    """A shard of ``samples`` samples cut right after its ``kept``-th sample: tar reads the
    rest as if the archive ended there."""
    shard = shards_with_labels(folder, tuple(f"c{n % 2}" for n in range(samples // 2)))
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    last = members[2 * kept - 1]
    end = last.offset_data + (last.size + tarfile.BLOCKSIZE - 1) // tarfile.BLOCKSIZE * tarfile.BLOCKSIZE
    shard.write_bytes(shard.read_bytes()[:end])
    return shard


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    tar.addfile(member, io.BytesIO(data))


def cifar_python_with(folder: Path, data: object, labels: object) -> Path:
    """A CIFAR-10 python distribution whose first batch holds ``data`` and ``labels``; the other
    batches are valid."""
    out = folder / "cifar-10-batches-py"
    out.mkdir(parents=True)
    good = {"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 3], "batch_label": "ok"}
    for batch in range(1, 6):
        content = {"data": data, "labels": labels} if batch == 1 else good
        (out / f"data_batch_{batch}").write_bytes(pickle.dumps(content, protocol=4))
    (out / "test_batch").write_bytes(pickle.dumps(good, protocol=4))
    names = {"label_names": [f"class{i}" for i in range(10)]}
    (out / "batches.meta").write_bytes(pickle.dumps(names, protocol=4))
    return out


def shared_reference_rows(rows: int = 150_000) -> list[list[int]]:
    """One row of pixels referred to ``rows`` times: a small pickle that expands to gigabytes."""
    row = [0] * 3072
    return [row] * rows


def hf_parquet(
    folder: Path, cells: list[dict[str, object]], labels: list[str], *, features: dict | None = None
) -> Path:
    """``folder/train-00000-of-00001.parquet`` with an ``image`` struct column of ``cells``
    (``features`` instead: the Hub's metadata, naming columns the table may not have)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    if features is None:
        table = pa.table({"image": cells, "label": labels})
    else:
        table = pa.table({"picture_bytes": [c.get("bytes") for c in cells], "label": labels})
        metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
        table = table.replace_schema_metadata(metadata)
    path = folder / "train-00000-of-00001.parquet"
    pq.write_table(table, path)
    return path
