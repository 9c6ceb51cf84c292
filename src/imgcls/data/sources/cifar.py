"""CIFAR-10 and CIFAR-100 as they are distributed, read in place.

Understood, as torchvision and the data sets' home page leave them on disk:

- the python version: ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``,
  ``batches.meta``), ``cifar-100-python/`` (``train``, ``test``, ``meta``), either folder's
  parent (torchvision's ``root``), or the ``.tar.gz`` itself, read without unpacking;
- the binary version: ``cifar-10-batches-bin/`` (``data_batch_1..5.bin``, ``test_batch.bin``,
  ``batches.meta.txt``) and ``cifar-100-binary/`` (``train.bin``, ``test.bin``,
  ``fine_label_names.txt``, ``coarse_label_names.txt``).

The official test batch becomes the test split. CIFAR-100 is labelled with its 100 fine
classes or its 20 coarse superclasses (``label_set``). A record's image is its row of the batch's
pixel array (a view, never a copy; a record's id names its batch and row, ``data_batch_1/00012``).
The binary version's batch files are memory-mapped, so their pixels are read from disk when an
image is; a python batch is a pickle, which cannot be mapped, so its pixel array is held in
memory (the whole of CIFAR-10 or -100 is 180 MB of pixels).

The python batches are pickles written by Python 2. They are read with an unpickler that
admits only what they hold (containers, and numpy's array and dtype reconstruction), so a
tampered batch cannot run code: it is refused with an error that says so.
"""

from __future__ import annotations

import io
import operator
import pickle
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.config import LABEL_SETS
from imgcls.data.images import MemoryImage
from imgcls.data.records import TEST, TRAIN, DatasetScan, ImageRecord, validate_scan
from imgcls.errors import DataError

SIDE = 32
PIXELS = 3 * SIDE * SIDE


@dataclass(frozen=True)
class _Layout:
    """One distribution: its folder name, batch files per split, and how it names classes."""

    folder: str
    batches: dict[str, tuple[str, ...]]
    binary: bool
    hundred: bool

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(name for names in self.batches.values() for name in names)


_TRAIN10 = tuple(f"data_batch_{i}" for i in range(1, 6))
LAYOUTS = (
    _Layout("cifar-10-batches-py", {TRAIN: _TRAIN10, TEST: ("test_batch",)}, binary=False, hundred=False),
    _Layout("cifar-100-python", {TRAIN: ("train",), TEST: ("test",)}, binary=False, hundred=True),
    _Layout(
        "cifar-10-batches-bin",
        {TRAIN: tuple(f"{n}.bin" for n in _TRAIN10), TEST: ("test_batch.bin",)},
        binary=True,
        hundred=False,
    ),
    _Layout("cifar-100-binary", {TRAIN: ("train.bin",), TEST: ("test.bin",)}, binary=True, hundred=True),
)
_META = {(False, False): "batches.meta", (False, True): "meta", (True, False): "batches.meta.txt"}


def looks_like_cifar(path: Path) -> bool:
    """Whether ``path`` is one of the distributions above (or a folder holding one)."""
    if path.is_file():
        return path.name.endswith((".tar.gz", ".tgz")) and path.name.startswith(("cifar-10", "cifar-100"))
    return path.is_dir() and _find_layout(path) is not None


def read_cifar(source: str | Path, *, label_set: str = "fine", min_classes: int = 2) -> DatasetScan:
    """Every image of a CIFAR distribution, labelled, with the test batch as the test split."""
    if label_set not in LABEL_SETS:
        raise DataError(f"unknown `label_set` {label_set!r}; choose fine or coarse")
    path = Path(source).expanduser()
    if path.is_file():
        return _from_archive(path, label_set, min_classes)
    found = _find_layout(path)
    if found is None:
        expected = ", ".join(layout.folder for layout in LAYOUTS)
        raise DataError(f"{path} is not a CIFAR distribution: expected one of {expected}")
    folder, layout = found
    missing = [name for name in (*layout.files, *_meta_files(layout)) if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{folder} is missing {', '.join(missing)}: the {layout.folder} download is incomplete"
        )
    read: Callable[[str], bytes | np.ndarray] = lambda name: (folder / name).read_bytes()  # noqa: E731
    if layout.binary:
        read = lambda name: _mapped(folder / name)  # noqa: E731
    return _scan(folder, layout, read, label_set, min_classes)


def _mapped(path: Path) -> bytes | np.ndarray:
    """A binary batch's bytes mapped from disk (a meta file's read whole)."""
    if path.suffix != ".bin":
        return path.read_bytes()
    try:
        return np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _find_layout(path: Path) -> tuple[Path, _Layout] | None:
    """The distribution in ``path`` (named as downloaded, or holding its first batch) or in
    the sub-folder torchvision creates under its ``root``."""
    for layout in LAYOUTS:
        for folder in (path, path / layout.folder):
            if folder.is_dir() and (folder.name == layout.folder or (folder / layout.files[0]).is_file()):
                return folder, layout
    return None


def _meta_files(layout: _Layout) -> tuple[str, ...]:
    if layout.binary and layout.hundred:
        return ("fine_label_names.txt", "coarse_label_names.txt")
    return (_META[(layout.binary, layout.hundred)],)


def _from_archive(path: Path, label_set: str, min_classes: int) -> DatasetScan:
    try:
        with tarfile.open(path, "r:*") as archive:
            members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
            layout = next((known for known in LAYOUTS if known.files[0] in members), None)
            if layout is None:
                raise DataError(f"{path} holds no CIFAR batches")
            missing = [n for n in (*layout.files, *_meta_files(layout)) if n not in members]
            if missing:
                raise DataError(f"{path} is missing {', '.join(missing)}: the archive is incomplete")
            contents = {
                name: archive.extractfile(members[name]).read()  # type: ignore[union-attr]
                for name in (*layout.files, *_meta_files(layout))
            }
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return _scan(path, layout, contents.__getitem__, label_set, min_classes, root=path.parent)


def _scan(
    source: Path,
    layout: _Layout,
    read: Callable[[str], bytes | np.ndarray],
    label_set: str,
    min_classes: int,
    *,
    root: Path | None = None,
) -> DatasetScan:
    names = _class_names(layout, read, label_set, source)
    scan = DatasetScan(
        root=root or source, classes=sorted(names), records=[], source=str(source), format="cifar"
    )
    for split, batches in layout.batches.items():
        for batch in batches:
            pixels, labels = _read_batch(layout, read(batch), batch, source, label_set)
            for row, (image, label) in enumerate(zip(pixels, labels, strict=True)):
                if not 0 <= label < len(names):
                    raise DataError(
                        f"{source}/{batch} row {row} has label {label}; there are {len(names)} classes"
                    )
                record = ImageRecord(f"{batch}/{row:05d}", names[label], split)
                scan.records.append(record)
                scan.images[record.path] = MemoryImage(record.path, pixels=image)
    scan.folder_splits = {TRAIN, TEST}
    validate_scan(scan, min_classes=min_classes, expected="CIFAR batches in {root}")
    return scan


def _class_names(
    layout: _Layout, read: Callable[[str], bytes | np.ndarray], label_set: str, source: Path
) -> list[str]:
    if layout.binary:
        name = f"{label_set}_label_names.txt" if layout.hundred else "batches.meta.txt"
        return [line.strip() for line in bytes(read(name)).decode("utf-8").splitlines() if line.strip()]
    meta = _unpickle(
        bytes(read(_META[(False, layout.hundred)])), f"{source}/{_META[(False, layout.hundred)]}"
    )
    key = f"{label_set}_label_names" if layout.hundred else "label_names"
    if key not in meta:
        raise DataError(f"{source}: the batches' meta file has no {key}")
    return [str(n) for n in meta[key]]


def _read_batch(
    layout: _Layout, data: bytes | np.ndarray, batch: str, source: Path, label_set: str
) -> tuple[np.ndarray, list[int]]:
    """Pixels (N x 32 x 32 x 3 uint8, a view of ``data`` for a binary batch) and class indices
    of one batch."""
    if layout.binary:
        width = (2 if layout.hundred else 1) + PIXELS
        if len(data) % width:
            raise DataError(f"{source}/{batch} is not a whole number of {width}-byte CIFAR records")
        table = (data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)).reshape(
            -1, width
        )
        column = (1 if label_set == "fine" else 0) if layout.hundred else 0
        labels, flat = table[:, column].astype(int).tolist(), table[:, width - PIXELS :]
    else:
        flat, labels = _pickled_batch(bytes(data), f"{source}/{batch}", label_set, hundred=layout.hundred)
    return flat.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1), labels


def _pickled_batch(data: bytes, name: str, label_set: str, *, hundred: bool) -> tuple[np.ndarray, list[int]]:
    """A python-version batch's pixels and labels, checked to be what CIFAR's pickles hold: a
    uint8 array of N x 3072 pixels, whose bytes are in the file (a pickle whose shared references
    would expand into far more images than it holds is refused), and N integer labels."""
    content = _unpickle(data, name)
    key = f"{label_set}_labels" if hundred else "labels"
    if "data" not in content or key not in content:
        raise DataError(f"{name} has no data or {key}: not a CIFAR batch")
    flat, stored = content["data"], content[key]
    if not isinstance(flat, np.ndarray) or flat.dtype != np.uint8:
        found = f"a {flat.dtype} array" if isinstance(flat, np.ndarray) else f"a {type(flat).__name__}"
        raise DataError(f"{name}: its data is {found}, not the uint8 pixel array of a CIFAR batch")
    if flat.nbytes > len(data):
        raise DataError(f"{name}: its data would take {flat.nbytes:,} bytes from a {len(data):,}-byte file")
    try:
        labels = [operator.index(v) for v in stored]
    except TypeError:
        raise DataError(f"{name}: its {key} are not all whole numbers") from None
    if flat.ndim != 2 or flat.shape[1] != PIXELS or len(flat) != len(labels):
        raise DataError(f"{name}: expected {len(labels)} rows of {PIXELS} pixels, got {flat.shape}")
    return flat, labels


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _BatchUnpickler(pickle.Unpickler):
    """Python 2's CIFAR pickles hold dicts, lists, strings, numbers and numpy arrays; nothing else
    may be named, so a tampered batch cannot make the unpickler call anything else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR batch never holds")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return np.ndarray if name == "ndarray" else np.dtype

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("it refers to persistent objects, which a CIFAR batch never holds")


def _numpy_reconstruct() -> Callable[..., np.ndarray]:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy 2 (numpy.core is an alias)
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _unpickle(data: bytes, name: str) -> dict[str, Any]:
    try:
        content = _BatchUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"{name} refused: {exc}; the file may have been tampered with") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise DataError(f"{name} is not a readable CIFAR batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(content, dict):
        raise DataError(f"{name} is not a CIFAR batch (it holds a {type(content).__name__})")
    return content
