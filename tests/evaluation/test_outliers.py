"""Outliers: far from every other image on a robust scale."""

from __future__ import annotations

import numpy as np

from imgcls.evaluation.outliers import OUTLIER_Z, find_outliers


def test_an_image_far_from_all_others_is_flagged_and_ordinary_spread_is_not():
    rng = np.random.default_rng(0)
    sims = np.sort(rng.uniform(0.80, 0.90, size=(50, 6)), axis=1)[:, ::-1]
    sims[:, 0] = 1.0  # each image's own row comes first
    sims[17, 1:] = 0.1  # one image like no other
    found = find_outliers(sims)
    assert np.flatnonzero(found.flagged).tolist() == [17]
    assert found.z[17] >= OUTLIER_Z and found.distance[17] > 0.85
    assert not find_outliers(sims[:, 1:], self_included=False, z_limit=1e9).flagged.any()
