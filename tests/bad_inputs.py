"""A corpus of awkward and hostile image files, generated at test time.

Files that a user's photo folder really holds (phone, scanner, scraper and shared-drive
output) beside files that are not images at all, broken, or built to exhaust memory. Each
kind is written by one small function; ``write_corpus`` writes them all into a folder and
says which must be used as images and which must be reported as unreadable.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import make_image


def _photo(seed: int = 0, size: int = 48) -> Image.Image:
    return make_image((120, 90, 60), seed=seed, size=size)


def _encoded(image: Image.Image, kind: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


def _array(values: np.ndarray, dtype: type) -> Image.Image:
    return Image.fromarray(values.astype(dtype))


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    return _encoded(_photo(1, 40).crop((0, 0, 40, 24)), "JPEG", exif=exif)


def _multipage_tiff() -> bytes:
    frames = [_photo(2), _photo(3)]
    return _encoded(frames[0], "TIFF", save_all=True, append_images=frames[1:])


def _animated_gif() -> bytes:
    frames = [_photo(4).convert("P"), _photo(5).convert("P")]
    return _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _palette_with_transparency() -> bytes:
    image = _photo(6).convert("P")
    return _encoded(image, "PNG", transparency=0)


def _float_tiff(values: np.ndarray) -> bytes:
    return _encoded(Image.fromarray(values.astype(np.float32), mode="F"), "TIFF")


def _strip(width: int) -> bytes:
    return _encoded(Image.new("L", (width, 1)), "PNG", optimize=True)


def _bomb() -> bytes:
    """A small file that claims more pixels than imgcls decodes (about 110 megapixels of black)."""
    return _encoded(Image.new("1", (10_500, 10_500)), "PNG", optimize=True)


def _jpeg() -> bytes:
    return _encoded(_photo(7), "JPEG")


def _png() -> bytes:
    return _encoded(_photo(8), "PNG")


# name -> bytes, for images that must be used (decoded to RGB and classified).
READABLE: dict[str, Callable[[], bytes]] = {
    "cmyk.jpg": lambda: _encoded(_photo(10).convert("CMYK"), "JPEG"),
    "grey.jpg": lambda: _encoded(_photo(11).convert("L"), "JPEG"),
    "progressive.jpg": lambda: _encoded(_photo(12), "JPEG", progressive=True),
    "exif-rotated.jpg": _exif_rotated,
    "trailing-garbage.jpg": lambda: _jpeg() + b"\x00garbage after the end of the image" * 4,
    "upper-case.JPG": _jpeg,
    "jfif-extension.jfif": _jpeg,
    "png-named.jpeg": _png,  # the content decides, not the extension
    "sixteen-bit.png": lambda: _encoded(
        Image.fromarray((np.arange(48 * 48).reshape(48, 48) * 20).astype(np.uint16)), "PNG"
    ),
    "rgba.png": lambda: _encoded(_photo(13).convert("RGBA"), "PNG"),
    "grey-alpha.png": lambda: _encoded(_photo(14).convert("LA"), "PNG"),
    "palette.png": lambda: _encoded(_photo(15).convert("P"), "PNG"),
    "palette-transparent.png": _palette_with_transparency,
    "interlaced.png": lambda: _encoded(_photo(16), "PNG", interlace=1),
    "int32.tif": lambda: _encoded(Image.fromarray(np.full((40, 40), 70_000, dtype=np.int32)), "TIFF"),
    "one-pixel.png": lambda: _encoded(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"),
    "two-by-two.jpg": lambda: _encoded(Image.new("RGB", (2, 2), (200, 10, 30)), "JPEG"),
    "long-but-allowed.png": lambda: _encoded(Image.new("RGB", (380, 20), (40, 40, 40)), "PNG"),
    "bilevel.bmp": lambda: _encoded(_photo(17).convert("1"), "BMP"),
    "palette.gif": lambda: _encoded(_photo(18).convert("P"), "GIF"),
    "animated.gif": _animated_gif,
    "photo.webp": lambda: _encoded(_photo(19), "WEBP"),
    "photo.ppm": lambda: _encoded(_photo(20), "PPM"),
    "grey.pgm": lambda: _encoded(_photo(21).convert("L"), "PPM"),
    "multipage.tiff": _multipage_tiff,
    "sixteen-bit.tif": lambda: _encoded(Image.fromarray(np.full((30, 30), 40_000, dtype=np.uint16)), "TIFF"),
    "float-partly-nan.tif": lambda: _float_tiff(np.where(np.eye(30) > 0, np.nan, 0.5)),
    "space in name.png": _png,
    "émoji-🐝.png": _png,
    os.fsdecode(b"latin1-caf\xe9.png"): _png,  # a name that is not UTF-8
}

# name -> bytes, for files that must be reported as unreadable, with a reason.
UNREADABLE: dict[str, Callable[[], bytes]] = {
    "empty.jpg": lambda: b"",
    "text.jpg": lambda: b"these are notes, not a photo\n" * 10,
    "html.png": lambda: b"<!doctype html><html><body>404 Not Found</body></html>",
    "random-bytes.png": lambda: np.random.default_rng(0).bytes(4096),
    "truncated.jpg": lambda: _jpeg()[: len(_jpeg()) // 2],
    "truncated.png": lambda: _png()[: len(_png()) // 2],
    "header-only.jpg": lambda: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00",
    "png-signature-only.png": lambda: b"\x89PNG\r\n\x1a\n",
    "gzipped.jpg": lambda: gzip.compress(_jpeg()),
    "thin-strip.png": lambda: _strip(3300),
    "million-wide.png": lambda: _strip(1_000_000),
    "bomb.png": _bomb,
    "all-nan.tif": lambda: _float_tiff(np.full((16, 16), np.nan)),
    "zip-named.webp": lambda: b"PK\x03\x04" + b"\x00" * 64,
}


def write_corpus(folder: Path) -> tuple[set[Path], set[Path]]:
    """Write every kind into ``folder``; the files that must be used, and those that must be
    reported (with a dangling link among them: a file that is listed but cannot be read)."""
    folder.mkdir(parents=True, exist_ok=True)
    used, reported = set(), set()
    for kinds, into in ((READABLE, used), (UNREADABLE, reported)):
        for name, content in kinds.items():
            path = folder / name
            path.write_bytes(content())
            into.add(path)
    dangling = folder / "dangling-link.jpg"
    dangling.symlink_to(folder / "was-moved-away.jpg")
    reported.add(dangling)
    return used, reported
