"""Decode and crop a data set's images in a child process while the CLI is still importing torch.

The start-up imports take seconds of one core (torch alone for EfficientNet-Lite, with
torchvision and timm for other backbones), about as long as decoding and cropping a few hundred
photos. A child forked before those imports does the decoding on the other core,
into shared memory, so feature extraction finds its images ready and runs with no loader
process competing for the cores.

The crops are bit-for-bit those of the loaders (``pixels.crop_array``, held equal to the
torchvision transform by a test), and extraction uses them only for the same preprocessing.
Images past ``max_bytes`` of crops, and any image the child could not handle, go through the
ordinary loader.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgcls.data._pixels import crop_array
from imgcls.data.images import UnreadableImageError, load_rgb
from imgcls.data.preprocessing import Preprocessing
from imgcls.data.sources.folders import scan_dataset
from imgcls.errors import ImgclsError
from imgcls.system.cpu import available_memory

FALLBACK_MAX_BYTES = 512 * 2**20  # about 2,100 crops at 288 px, where free memory is unknown
MEMORY_FRACTION = 0.15  # of the available memory, for the crops
_HANDED_BACK = "handed back"  # the child could not process the image: the loader will


@dataclass(frozen=True)
class Decoded:
    """One prefetched image: its crop, or why it is unreadable; the child's seconds on it."""

    crop: np.ndarray | None
    reason: str | None
    seconds: float


class DecodePrefetch:
    """A forked child that decodes ``paths`` in order into shared memory (up to ``max_bytes``)."""

    def __init__(self, paths: Sequence[Path], pre: Preprocessing, *, max_bytes: int | None = None) -> None:
        max_bytes = default_max_bytes() if max_bytes is None else max_bytes
        self.pre = pre
        self._shape = (pre.input_size, pre.input_size, 3)
        self._slot = slot = int(np.prod(self._shape))  # bytes of one crop
        self.paths = list(paths)[: max(max_bytes // slot, 0)]
        self._index = {str(p): i for i, p in enumerate(self.paths)}
        self._done: dict[int, tuple[str | None, float]] = {}
        self._buffer = mmap.mmap(-1, max(len(self.paths), 1) * slot)  # shared with the child
        read_end, write_end = os.pipe()
        self._pid = os.fork()
        if self._pid == 0:  # the child: decode, report each image on the pipe, never return
            os.close(read_end)
            _child(self.paths, pre, self._buffer, slot, write_end)
        os.close(write_end)
        self._pipe = os.fdopen(read_end, "r", encoding="utf-8")
        self._child_done = False

    def get(self, path: Path) -> Decoded | None:
        """``path``'s crop (waiting for the child if needed); None if the loader must do it."""
        index = self._index.get(str(path))
        if index is None:
            return None
        while index not in self._done and self._read_one():
            pass
        if index not in self._done:  # the child stopped early
            return None
        reason, seconds = self._done[index]
        if reason == _HANDED_BACK:
            return None
        if reason is not None:
            return Decoded(None, reason, seconds)
        crop = np.frombuffer(self._buffer, dtype=np.uint8, count=self._slot, offset=index * self._slot)
        return Decoded(crop.reshape(self._shape).copy(), None, seconds)

    def decoding(self) -> bool:
        """Whether the child is still at work (it then keeps one core busy)."""
        if not self._pid:
            return False
        pid, _ = os.waitpid(self._pid, os.WNOHANG)
        if pid:  # it has exited; what it wrote stays readable in the pipe
            self._pid = 0
        return not pid

    def _read_one(self) -> bool:
        line = "" if self._child_done else self._pipe.readline()
        if not line:  # the child has finished (or died)
            self._child_done = True
            return False
        index, reason, seconds = json.loads(line)
        self._done[index] = (reason, seconds)
        return True

    def close(self) -> None:
        """Stop the child (if still running) and free the shared memory."""
        if self._pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGTERM)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._pid, 0)
            self._pid = 0
        self._child_done = True
        self._pipe.close()
        self._buffer.close()


def default_max_bytes() -> int:
    """The crops' memory: a share of what is available (a few thousand crops at 288 px take
    about a gigabyte), or a fixed amount where that is unknown."""
    available = available_memory()
    return int(available * MEMORY_FRACTION) if available else FALLBACK_MAX_BYTES


def _child(paths: Sequence[Path], pre: Preprocessing, buffer: mmap.mmap, slot: int, write_end: int) -> None:
    parent = os.getppid()
    status = 0
    try:
        with os.fdopen(write_end, "w", encoding="utf-8") as out:
            for index, path in enumerate(paths):
                if os.getppid() != parent:  # the CLI has gone: stop
                    break
                out.write(json.dumps(_decode_into(buffer, index, slot, path, pre)) + "\n")
                out.flush()
    except BaseException:  # a child must never unwind into the parent's code
        status = 1
    finally:
        os._exit(status)


def _decode_into(buffer: mmap.mmap, index: int, slot: int, path: Path, pre: Preprocessing) -> list:
    started = time.perf_counter()
    try:
        crop = crop_array(load_rgb(path, min_side=pre.resize_size), pre)
    except UnreadableImageError as exc:
        return [index, exc.reason, time.perf_counter() - started]
    except Exception:  # the loader redoes it and reports the error properly
        return [index, _HANDED_BACK, 0.0]
    buffer[index * slot : (index + 1) * slot] = crop.tobytes()
    return [index, None, time.perf_counter() - started]


# -- the CLI's one prefetch ------------------------------------------------------------------

_ACTIVE: DecodePrefetch | None = None


def prefetch_folder(data: str | Path, pre: Preprocessing | None) -> contextlib.AbstractContextManager:
    """While the block runs, decode ``data``'s images with ``pre`` for feature extraction.

    Meant for a command's start, before it imports torch: without an import to overlap (torch
    already loaded), without a preprocessing known before timm loads (``pre`` is ``None``), or
    for a folder that does not scan, it does nothing (the command then reports any problem).
    """
    if pre is None or "torch" in sys.modules:
        return contextlib.nullcontext()
    return prefetch_paths(_quiet_scan(data) or [], pre)


@contextlib.contextmanager
def prefetch_paths(paths: Sequence[Path], pre: Preprocessing) -> Iterator[None]:
    """While the block runs, decode ``paths`` with ``pre`` (nothing if torch is already loaded:
    the child is there to use the time its import takes)."""
    global _ACTIVE
    # fork() before torch is loaded is safe; Linux only (no fork on Windows, macOS discourages it)
    if not paths or "torch" in sys.modules or _ACTIVE is not None or not sys.platform.startswith("linux"):
        yield
        return
    _ACTIVE = DecodePrefetch(paths, pre)
    try:
        yield
    finally:
        _ACTIVE.close()
        _ACTIVE = None


def active_prefetch(pre: Preprocessing) -> DecodePrefetch | None:
    """The running prefetch, if it decodes with ``pre``."""
    return _ACTIVE if _ACTIVE is not None and _ACTIVE.pre == pre else None


def _quiet_scan(data: str | Path) -> list[Path] | None:
    """The image files of a class-folder data set; ``None`` for anything else (other sources
    hold their images in memory or need no decoding ahead)."""
    loggers = [logging.getLogger(name) for name in ("imgcls.data.sources.folders", "imgcls.data.records")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)  # the command's own scan reports what it finds
    try:
        scan = scan_dataset(data)
    except (ImgclsError, OSError):
        return None
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    return [path for path in map(scan.absolute, scan.records) if isinstance(path, Path)]
