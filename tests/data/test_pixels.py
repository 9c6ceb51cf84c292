"""The torch-free preprocessing equals torchvision's eval transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import transforms as T

from imgcls.data._pixels import crop_array, to_input_array
from imgcls.data.preprocessing import Preprocessing
from imgcls.data.transforms import eval_crop, eval_transform, normalize_batch
from tests.conftest import make_image


def _torchvision_eval(pre: Preprocessing, *, flip: bool, tensor: bool = True) -> T.Compose:
    """The reference: torchvision's classic eval pipeline on PIL images."""
    steps = [
        T.Resize(pre.resize_size, interpolation=T.InterpolationMode(pre.interpolation)),
        T.CenterCrop(pre.input_size),
    ]
    steps += [T.RandomHorizontalFlip(p=1.0)] if flip else []
    steps += [T.ToTensor(), T.Normalize(pre.mean, pre.std)] if tensor else []
    return T.Compose(steps)


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (256, 256), (97, 333)])
@pytest.mark.parametrize("flip", [False, True])
def test_numpy_preprocessing_matches_torchvision(size, flip):
    pre = Preprocessing(
        input_size=64, crop_pct=0.875, interpolation="bicubic", mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4)
    )
    image = make_image((120, 60, 200), seed=size[0], size=max(size)).resize(size)
    expected = _torchvision_eval(pre, flip=flip)(image).numpy()
    actual = to_input_array(image, pre, flip=flip)
    assert actual.shape == expected.shape == (3, 64, 64)
    np.testing.assert_allclose(actual, expected, atol=1e-6)
    # the uint8 crops (what loaders and the CLI's prefetch process ship) are equal too
    classic_crop = np.asarray(_torchvision_eval(pre, flip=flip, tensor=False)(image))
    assert np.array_equal(crop_array(image, pre, flip=flip), classic_crop)
    assert np.array_equal(eval_crop(pre, flip=flip)(image).numpy(), classic_crop)


@pytest.mark.parametrize("flip", [False, True])
def test_batched_normalisation_is_torchvisions_per_image_transform(flip):
    """Loaders ship uint8 crops and the batch is normalised at once: exactly ToTensor + Normalize."""
    pre = Preprocessing(
        input_size=48, crop_pct=0.9, interpolation="bilinear", mean=(0.48, 0.45, 0.4), std=(0.22, 0.24, 0.25)
    )
    images = [make_image((10 * i, 200, 90), seed=i, size=70 + 9 * i) for i in range(3)]
    classic = _torchvision_eval(pre, flip=flip)
    expected = torch.stack([classic(image) for image in images])
    crops = torch.stack([eval_crop(pre, flip=flip)(image) for image in images])
    assert crops.dtype == torch.uint8 and crops.shape == (3, 48, 48, 3)
    batch = normalize_batch(crops, pre)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch, expected)
    assert torch.equal(eval_transform(pre, flip=flip)(images[0]), expected[0])
