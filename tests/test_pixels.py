"""The torch-free preprocessing equals torchvision's eval transform."""

from __future__ import annotations

import numpy as np
import pytest

from imgcls.config import Preprocessing
from imgcls.pixels import to_input_array
from imgcls.transforms import eval_transform
from tests.conftest import make_image


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (256, 256), (97, 333)])
@pytest.mark.parametrize("flip", [False, True])
def test_numpy_preprocessing_matches_torchvision(size, flip):
    pre = Preprocessing(
        input_size=64, crop_pct=0.875, interpolation="bicubic", mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4)
    )
    image = make_image((120, 60, 200), seed=size[0], size=max(size)).resize(size)
    expected = eval_transform(pre, flip=flip)(image).numpy()
    actual = to_input_array(image, pre, flip=flip)
    assert actual.shape == expected.shape == (3, 64, 64)
    np.testing.assert_allclose(actual, expected, atol=1e-6)
