"""The eval transform in numpy + PIL, with no torch or torchvision import (ONNX Runtime, and
the torch path's ``transforms.eval_crop``).

Bit-for-bit the same as torchvision's ``Resize`` + ``CenterCrop`` + ``ToTensor`` +
``Normalize`` on PIL images: resize the shorter side with PIL, centre-crop with torchvision's
rounding, scale to [0, 1], normalise. A unit test holds the two together.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from imgcls.data.preprocessing import RESAMPLE, Preprocessing


def to_input_array(image: Image.Image, pre: Preprocessing, *, flip: bool = False) -> np.ndarray:
    """A 3 x H x W float32 array ready for the network."""
    array = crop_array(image, pre, flip=flip).astype(np.float32) / 255.0
    array = (array - np.asarray(pre.mean, dtype=np.float32)) / np.asarray(pre.std, dtype=np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def resize_for(image: Image.Image, pre: Preprocessing) -> Image.Image:
    """The eval transform's resize alone: the shorter side to ``pre.resize_size``. The eval
    transform of the result is that of ``image``, so a large image can be shrunk early."""
    return _resize_shorter_side(
        image, pre.resize_size, RESAMPLE.get(pre.interpolation, Image.Resampling.BICUBIC)
    )


def crop_array(image: Image.Image, pre: Preprocessing, *, flip: bool = False) -> np.ndarray:
    """The geometric half: an H x W x 3 uint8 array (``transforms.eval_crop`` without torch)."""
    resized = resize_for(image, pre)
    cropped = _center_crop(resized, pre.input_size)
    if flip:
        cropped = ImageOps.mirror(cropped)
    return np.asarray(cropped, dtype=np.uint8)


def _resize_shorter_side(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    if short == size:
        return image
    new_short, new_long = size, int(size * long / short)
    new_size = (new_short, new_long) if width <= height else (new_long, new_short)
    return image.resize(new_size, resample=resample)


def _center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    top = round((height - size) / 2.0)
    left = round((width - size) / 2.0)
    return image.crop((left, top, left + size, top + size))
