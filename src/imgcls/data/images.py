"""Decode any image file a user might have into an 8-bit RGB ``PIL.Image``.

Applies EXIF orientation; converts grayscale, palette, alpha, CMYK and 16-bit images to RGB;
rejects empty, truncated, non-image and decompression-bomb sized files with an
``UnreadableImageError`` whose message says why.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from imgcls.errors import DataError, ImgclsError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}
)
# 1e8 pixels (about 10,000 x 10,000) is far beyond any photo a classifier needs.
MAX_PIXELS = 100_000_000
# Resizing the shorter side to the network's size scales the longer one by the same factor: a
# 3300 x 1 strip would become an 845,000 x 256 image. No photo is longer than this.
MAX_ASPECT_RATIO = 20

# Fail on truncated files instead of silently padding them with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class UnreadableImageError(ImgclsError):
    """An image file that cannot be decoded; ``reason`` is a short human explanation."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class StoredImage(Protocol):
    """An encoded image file kept elsewhere (in an archive, a Parquet file, an Arrow table) and
    read only when the image is: a data set of them costs memory per record, not per byte."""

    @property
    def where(self) -> str:
        """Where it is kept, for messages."""
        ...

    def read(self) -> bytes: ...


@dataclass(frozen=True)
class ArchiveMember:
    """An image file stored uncompressed inside an archive (a WebDataset shard): its bytes are
    read when the image is, so a data set of shards costs memory per record, not per byte."""

    archive: Path
    offset: int
    size: int

    @property
    def where(self) -> str:
        return str(self.archive)

    def read(self) -> bytes:
        with self.archive.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read(self.size)
        if len(data) != self.size:
            raise OSError(f"{self.archive} ends before the image at byte {self.offset} does")
        return data


@dataclass(frozen=True, eq=False)
class MemoryImage:
    """An image that is not a file of its own: decoded pixels (a CIFAR batch's row), the
    encoded bytes of a file, or such a file stored elsewhere (read on demand). ``name`` is
    its record id, shown wherever a file's path would be; everything that reads images
    accepts one in place of a path."""

    name: str
    pixels: np.ndarray | None = None  # H x W x 3 uint8
    data: bytes | None = None  # an encoded image file
    member: StoredImage | None = None  # an encoded image file stored elsewhere

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.pixels, self.data, self.member)) != 1:
            raise ValueError("a MemoryImage holds one of pixels, encoded bytes or an archive member")

    def __str__(self) -> str:
        return self.name

    def encoded(self) -> bytes | None:
        """The encoded image file (``None`` for pixels); ``UnreadableImageError`` when the
        place holding it cannot be read."""
        if self.member is None:
            return self.data
        try:
            return self.member.read()
        except OSError as exc:
            raise UnreadableImageError(self.name, f"cannot read it from {self.member.where} ({exc})") from exc

    def digest(self) -> str:
        """Content digest: of the bytes, as for a file (so a file and its bytes share cache
        entries), or of the pixels and their shape."""
        data = self.encoded()
        if data is not None:
            return hashlib.blake2b(data).hexdigest()[:32]
        pixels = np.ascontiguousarray(self.pixels)
        digest = hashlib.blake2b(f"pixels:{pixels.shape}:{pixels.dtype}".encode())
        digest.update(pixels.tobytes())
        return digest.hexdigest()[:32]

    def rgb(self, min_side: int | None = None) -> Image.Image:
        data = self.encoded()
        if data is not None:
            return decode_rgb(data, name=self.name, min_side=min_side)
        return to_rgb(Image.fromarray(self.pixels))


ImageRef = Path | MemoryImage  # where an image of a data set comes from


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def load_rgb(path: str | Path | MemoryImage, *, min_side: int | None = None) -> Image.Image:
    """Decode ``path`` to RGB.

    Args:
        path: the image file, or an image held in memory.
        min_side: if given, a JPEG may be decoded at a reduced scale (DCT scaling) as long as
            both sides stay at least this large; much faster for big photos.
    """
    if isinstance(path, MemoryImage):
        return path.rgb(min_side)
    return decode_rgb(read_image_file(path), name=path, min_side=min_side)


def read_image_file(path: str | Path) -> bytes:
    """The bytes of an image file; ``UnreadableImageError`` when the file cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UnreadableImageError(path, f"cannot read file ({exc.strerror})") from exc


def image_header(data: bytes, *, name: str | Path = "<bytes>") -> tuple[tuple[int, int], str]:
    """The stored size (width, height; before any EXIF rotation) and mode of encoded image
    bytes, read from the header alone."""
    if not data:
        raise UnreadableImageError(name, "empty file (0 bytes)")
    image = _open(data, name)
    return image.size, image.mode


def decode_rgb(data: bytes, *, name: str | Path = "<bytes>", min_side: int | None = None) -> Image.Image:
    """Decode image bytes to RGB; see ``load_rgb``."""
    if not data:
        raise UnreadableImageError(name, "empty file (0 bytes)")
    image = _open(data, name)
    _check_size(image, name)
    if min_side is not None and image.format == "JPEG":
        image.draft(image.mode, (min_side, min_side))
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError) as exc:
        raise UnreadableImageError(name, f"truncated or corrupt image data ({exc})") from exc
    if image.mode == "F" and not np.isfinite(np.asarray(image)).any():
        raise UnreadableImageError(name, "a floating-point image without a single finite pixel (all NaN)")
    return to_rgb(image)


def _open(data: bytes, name: str | Path) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89.5 megapixels; MAX_PIXELS, checked next, is the limit imgcls keeps.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise UnreadableImageError(name, "not an image (format not recognised)") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImageError(name, f"rejected as a decompression bomb ({exc})") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise UnreadableImageError(name, f"corrupt image header ({exc})") from exc


def _check_size(image: Image.Image, name: str | Path) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise UnreadableImageError(name, f"image has no pixels ({width}x{height})")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise UnreadableImageError(
            name,
            f"rejected: {width}x{height} is a strip, not a photo (an aspect ratio beyond "
            f"{MAX_ASPECT_RATIO}:1 would take too much memory to resize)",
        )
    if width * height > MAX_PIXELS:
        raise UnreadableImageError(
            name,
            f"rejected as a possible decompression bomb: {width}x{height} = "
            f"{width * height:,} pixels exceeds the limit of {MAX_PIXELS:,}",
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is composited onto white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_depth_to_rgb(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit single-channel images: rescale to 0-255 instead of clipping."""
    array = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if image.mode == "F":
        peak = 1.0 if array.max(initial=0.0) <= 1.0 else 255.0
    elif image.mode.startswith("I;16") or array.max(initial=0.0) > 255:
        peak = 65535.0
    else:
        peak = 255.0
    scaled = np.clip(np.rint(array / peak * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L").convert("RGB")


ImageInput = str | Path | Image.Image | np.ndarray | bytes


def as_rgb_image(image: ImageInput, *, min_side: int | None = None) -> tuple[str | None, Image.Image]:
    """Any single-image input (path, encoded bytes, uint8 array, PIL image) as RGB, with its
    path when it has one."""
    if isinstance(image, str | Path):
        return str(image), load_rgb(image, min_side=min_side)
    if isinstance(image, bytes):
        return None, decode_rgb(image, min_side=min_side)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise DataError(
                f"an image array must be HxW or HxWxC uint8; got {image.dtype} with shape {image.shape}"
            )
        return None, to_rgb(Image.fromarray(image))
    if isinstance(image, Image.Image):
        return None, to_rgb(image)
    raise DataError(f"cannot classify a {type(image).__name__}; pass a path, PIL image, uint8 array or bytes")
