"""What an image is, beyond its label: a digest of its bytes, a perceptual hash, its size and
whether it is grey. ``imgcls doctor`` finds duplicates and odd images with them.

The perceptual hash is a difference hash: the image shrunk to 9x8 grey pixels, one bit per
pair of horizontal neighbours (is the left one brighter?). Resizing, recompressing or a small
change of brightness leaves it (nearly) unchanged; different pictures differ in about half
of its 64 bits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from imgcls.data.images import (
    ImageRef,
    MemoryImage,
    UnreadableImageError,
    decode_rgb,
    image_header,
    read_image_file,
)

HASH_SIDE = 8  # a 64-bit hash
THUMBNAIL_SIDE = 64  # decoded at least this large (JPEGs at a reduced DCT scale): enough for the hash
GREY_TOLERANCE = 3.0  # mean channel difference, in 0-255 levels, below which a colour image is grey


@dataclass(frozen=True)
class Fingerprint:
    content: str  # digest of the file's bytes (or of an in-memory image's pixels)
    dhash: int  # 64-bit difference hash
    width: int
    height: int
    grey: bool

    def distance(self, other: Fingerprint) -> int:
        """Bits in which the two perceptual hashes differ (0: the same picture, near enough)."""
        return (self.dhash ^ other.dhash).bit_count()


def fingerprint(ref: ImageRef) -> Fingerprint:
    """The fingerprint of one image; ``UnreadableImageError`` when it cannot be decoded."""
    if isinstance(ref, MemoryImage) and ref.pixels is not None:
        image = Image.fromarray(ref.pixels)
        return _from_image(ref.digest(), image, image.size, image.mode)
    data = ref.encoded() if isinstance(ref, MemoryImage) else read_image_file(ref)
    assert data is not None
    size, mode = image_header(data, name=str(ref))
    image = decode_rgb(data, name=str(ref), min_side=THUMBNAIL_SIDE)
    return _from_image(hashlib.blake2b(data).hexdigest()[:32], image, size, mode)


def fingerprints(
    refs: Sequence[ImageRef],
    *,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Fingerprint | None], dict[int, str]]:
    """Every image's fingerprint (``None`` where unreadable) and why each unreadable one failed.
    Decoding runs in ``workers`` threads (Pillow decodes without holding the GIL)."""

    def one(ref: ImageRef) -> Fingerprint | str:
        try:
            return fingerprint(ref)
        except UnreadableImageError as exc:
            return exc.reason

    found: list[Fingerprint | None] = []
    failures: dict[int, str] = {}
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i, result in enumerate(pool.map(one, refs)):
            if isinstance(result, str):
                failures[i] = result
                found.append(None)
            else:
                found.append(result)
            if progress is not None:
                progress(i + 1, len(refs))
    return found, failures


def _from_image(content: str, image: Image.Image, size: tuple[int, int], mode: str) -> Fingerprint:
    rgb = np.asarray(image.convert("RGB").resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE)), dtype=np.float32)
    grey = mode in ("1", "L", "LA", "I", "I;16", "F") or _channels_agree(rgb)
    small = image.convert("L").resize((HASH_SIDE + 1, HASH_SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(small, dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).flatten()
    dhash = int("".join("1" if b else "0" for b in bits), 2)
    return Fingerprint(content, dhash, size[0], size[1], grey)


def _channels_agree(rgb: np.ndarray) -> bool:
    spread = np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])
    return float(spread.mean()) < GREY_TOLERANCE
