"""Decoding the images users really have."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imgcls.data import images
from imgcls.data.images import UnreadableImageError, decode_rgb, load_rgb
from tests.conftest import make_image


def _bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_zero_byte_file_is_reported(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(UnreadableImageError, match="empty file"):
        load_rgb(path)


def test_text_file_with_image_extension_is_reported(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo")
    with pytest.raises(UnreadableImageError, match="not an image"):
        load_rgb(path)


def test_truncated_jpeg_is_reported():
    data = _bytes(make_image((10, 200, 10), 1, size=128), "JPEG")
    with pytest.raises(UnreadableImageError, match="truncated or corrupt"):
        decode_rgb(data[: len(data) // 2])


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (20, 10), (0, 255, 255, 0))  # pure red in CMYK
    image = decode_rgb(_bytes(cmyk, "JPEG"))
    assert image.mode == "RGB" and image.size == (20, 10)
    r, g, b = np.asarray(image).reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60


def test_sixteen_bit_png_is_rescaled_not_clipped():
    values = np.full((8, 8), 32768, dtype=np.uint16)  # mid-grey in 16-bit
    image = decode_rgb(_bytes(Image.fromarray(values), "PNG"))
    assert image.mode == "RGB"
    assert 120 <= np.asarray(image).mean() <= 136


def test_rgba_png_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    image = decode_rgb(_bytes(rgba, "PNG"))
    assert image.mode == "RGB"
    assert np.asarray(image).min() == 255


def test_palette_gif_and_grayscale_become_rgb():
    gif = decode_rgb(_bytes(make_image((0, 0, 255), 2).convert("P"), "GIF"))
    gray = decode_rgb(_bytes(Image.new("L", (5, 5), 77), "PNG"))
    assert gif.mode == gray.mode == "RGB"
    assert np.asarray(gray)[0, 0].tolist() == [77, 77, 77]


def test_exif_orientation_is_applied():
    wide = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    image = decode_rgb(_bytes(wide, "JPEG", exif=exif.tobytes()))
    assert image.size == (20, 40)


def test_decompression_bomb_is_rejected(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(UnreadableImageError, match="decompression bomb"):
        decode_rgb(_bytes(Image.new("RGB", (50, 50)), "PNG"))


def test_draft_decoding_keeps_the_requested_minimum_size():
    data = _bytes(make_image((100, 100, 100), 3, size=1024), "JPEG")
    image = decode_rgb(data, min_side=200)
    assert min(image.size) >= 200 and image.size[0] < 1024


def test_a_thin_strip_is_refused_before_it_is_decoded():
    import time
    import tracemalloc

    for width in (3300, 1_000_000):
        buffer = io.BytesIO()
        Image.new("L", (width, 1)).save(buffer, "PNG", optimize=True)
        tracemalloc.start()
        started = time.perf_counter()
        with pytest.raises(UnreadableImageError, match=r"is a strip, not a photo"):
            decode_rgb(buffer.getvalue(), name="strip.png")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 50 * 2**20 and time.perf_counter() - started < 5, (width, peak)


def test_the_documented_pixel_limit_is_the_one_kept():
    side = int(images.MAX_PIXELS**0.5) - 1  # above Pillow's 89.5-megapixel warning, below imgcls's limit
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, "PNG")
    header = images._open(buffer.getvalue(), "big.png")  # reads the header, decodes nothing
    images._check_size(header, "big.png")
    with pytest.raises(UnreadableImageError, match="decompression bomb"):
        images._check_size(Image.new("1", (side + 2, side + 2)), "bigger.png")


def test_an_all_nan_float_image_is_unreadable_and_a_partly_nan_one_is_not():
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), np.nan, dtype=np.float32), mode="F").save(buffer, "TIFF")
    with pytest.raises(UnreadableImageError, match="all NaN"):
        decode_rgb(buffer.getvalue(), name="nan.tif")
    partly = np.ones((8, 8), dtype=np.float32)
    partly[0, 0] = np.nan
    buffer = io.BytesIO()
    Image.fromarray(partly, mode="F").save(buffer, "TIFF")
    assert np.asarray(decode_rgb(buffer.getvalue()))[1, 1].tolist() == [255, 255, 255]
