"""CIFAR distributions written as the originals are, for tests: the python batches as Python 2's
cPickle wrote them (protocol 2, byte strings, numpy's ``_reconstruct``), opcode by opcode,
because Python 3's pickle writes byte strings differently; the binary batches as records of
label bytes and pixels."""

from __future__ import annotations

import struct
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CLASSES10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class Py2Pickler:
    """The opcodes cPickle emitted for the values a CIFAR batch holds."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")  # PROTO 2
        self.memo = 1  # cPickle's first memo slot

    def _put(self) -> None:
        if self.memo < 256:
            self.out += b"q" + bytes([self.memo])  # BINPUT
        else:
            self.out += b"r" + struct.pack("<I", self.memo)  # LONG_BINPUT
        self.memo += 1

    def string(self, value: bytes) -> None:
        if len(value) < 256:
            self.out += b"U" + bytes([len(value)]) + value  # SHORT_BINSTRING
        else:
            self.out += b"T" + struct.pack("<i", len(value)) + value  # BINSTRING
        self._put()

    def int(self, value: int) -> None:
        if 0 <= value < 256:
            self.out += b"K" + bytes([value])
        elif 0 <= value < 65536:
            self.out += b"M" + struct.pack("<H", value)
        else:
            self.out += b"J" + struct.pack("<i", value)

    def global_(self, module: str, name: str) -> None:
        self.out += b"c" + f"{module}\n{name}\n".encode()
        self._put()

    def list_(self, items: Sequence, write) -> None:
        self.out += b"]"  # EMPTY_LIST
        self._put()
        for start in range(0, len(items), 1000):  # cPickle appends in batches of 1000
            self.out += b"("
            for item in items[start : start + 1000]:
                write(item)
            self.out += b"e"  # APPENDS

    def array(self, array: np.ndarray) -> None:
        """``numpy.ndarray.__reduce__`` as Python 2's numpy returned it, saved by cPickle."""
        self.global_("numpy.core.multiarray", "_reconstruct")
        self.global_("numpy", "ndarray")
        self.int(0)
        self.out += b"\x85"  # TUPLE1
        self._put()
        self.string(b"b")
        self.out += b"\x87"  # TUPLE3
        self._put()
        self.out += b"R"  # REDUCE
        self._put()
        self.out += b"("  # state: (version, shape, dtype, is_fortran, raw data)
        self.int(1)
        for side in array.shape:
            self.int(side)
        self.out += b"\x86"  # TUPLE2
        self._put()
        self.global_("numpy", "dtype")
        self.string(b"u1")
        self.int(0)
        self.int(1)
        self.out += b"\x87"
        self._put()
        self.out += b"R"
        self._put()
        self.out += b"("
        self.int(3)
        self.string(b"|")
        self.out += b"NNN" + b"J" + struct.pack("<i", -1) + b"J" + struct.pack("<i", -1)
        self.int(0)
        self.out += b"t"  # TUPLE
        self._put()
        self.out += b"b"  # BUILD
        self.out += b"\x89"  # NEWFALSE: not Fortran order
        self.string(np.ascontiguousarray(array, dtype=np.uint8).tobytes())
        self.out += b"t"
        self._put()
        self.out += b"b"

    def dict_(self, items: dict[bytes, object]) -> bytes:
        self.out += b"}"  # EMPTY_DICT
        self._put()
        self.out += b"("
        for key, value in items.items():
            self.string(key)
            if isinstance(value, np.ndarray):
                self.array(value)
            elif isinstance(value, bytes):
                self.string(value)
            elif value and isinstance(value[0], int):
                self.list_(value, self.int)
            else:
                self.list_(value, self.string)
        self.out += b"u."  # SETITEMS, STOP
        return bytes(self.out)


def py2_batch(pixels: np.ndarray, labels: Sequence[int], label: bytes, *, key: bytes = b"labels") -> bytes:
    """A CIFAR python batch: ``pixels`` N x 32 x 32 x 3 uint8."""
    flat = pixels.transpose(0, 3, 1, 2).reshape(len(pixels), -1)
    names = [f"image_{i:05d}.png".encode() for i in range(len(pixels))]
    return Py2Pickler().dict_(
        {b"batch_label": label, key: [int(v) for v in labels], b"data": flat, b"filenames": names}
    )


def write_cifar10_python(
    folder: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> Path:
    """``folder/cifar-10-batches-py/`` with the train images dealt over five batches."""
    out = folder / "cifar-10-batches-py"
    out.mkdir(parents=True)
    pixels, labels = train
    for batch in range(5):
        rows = slice(batch, None, 5)
        label = f"training batch {batch + 1} of 5".encode()
        (out / f"data_batch_{batch + 1}").write_bytes(py2_batch(pixels[rows], labels[rows], label))
    (out / "test_batch").write_bytes(py2_batch(test[0], test[1], b"testing batch 1 of 1"))
    meta = Py2Pickler().dict_(
        {
            b"num_cases_per_batch": b"10000",
            b"label_names": [c.encode() for c in CLASSES10],
            b"num_vis": b"3072",
        }
    )
    (out / "batches.meta").write_bytes(meta)
    return out


def write_cifar10_binary(
    folder: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> Path:
    """``folder/cifar-10-batches-bin/``: records of one label byte and 3,072 pixel bytes."""
    out = folder / "cifar-10-batches-bin"
    out.mkdir(parents=True)

    def records(pixels: np.ndarray, labels: np.ndarray) -> bytes:
        flat = pixels.transpose(0, 3, 1, 2).reshape(len(pixels), -1)
        return b"".join(bytes([int(label)]) + row.tobytes() for label, row in zip(labels, flat, strict=True))

    pixels, labels = train
    for batch in range(5):
        rows = slice(batch, None, 5)
        (out / f"data_batch_{batch + 1}.bin").write_bytes(records(pixels[rows], labels[rows]))
    (out / "test_batch.bin").write_bytes(records(*test))
    (out / "batches.meta.txt").write_text("\n".join(CLASSES10) + "\n\n")
    return out


def tar_gz(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def write_shards(folder: Path, samples: dict[str, list[tuple[str, bytes, int]]]) -> Path:
    """WebDataset shards ``<split>-000000.tar`` of ``(key, png bytes, class index)`` samples, and
    an ``_info.json`` naming the classes."""
    import io
    import json

    folder.mkdir(parents=True)
    for split, items in samples.items():
        with tarfile.open(folder / f"{split}-000000.tar", "w") as tar:
            for key, image, label in items:
                for suffix, data in (("png", image), ("cls", str(label).encode())):
                    member = tarfile.TarInfo(f"{key}.{suffix}")
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))
    (folder / "_info.json").write_text(json.dumps({"name": "cifar-like", "classes": list(CLASSES10)}))
    return folder
