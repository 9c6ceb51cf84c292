"""Images far from every other image in embedding space (an error page saved as a photo, a
picture from another data set): scored by the mean cosine distance to their nearest
neighbours, and flagged when that is far out on a robust scale (median and MAD)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Robust z-score (distance from the median in units of 1.4826 x MAD, a standard deviation
# for normal data) above which an image is an outlier.
OUTLIER_Z = 5.0


@dataclass(frozen=True)
class Outliers:
    distance: np.ndarray  # mean cosine distance to the nearest neighbours, per image
    z: np.ndarray  # robust z-score of that distance
    flagged: np.ndarray  # bool per image


def find_outliers(
    neighbour_sims: np.ndarray, self_included: bool = True, z_limit: float = OUTLIER_Z
) -> Outliers:
    """``neighbour_sims``: each image's cosine similarities to its nearest images, most similar
    first (the first column is the image itself when ``self_included``)."""
    sims = neighbour_sims[:, 1:] if self_included else neighbour_sims
    distance = 1.0 - sims.mean(axis=1)
    median = float(np.median(distance))
    spread = 1.4826 * float(np.median(np.abs(distance - median)))
    z = (distance - median) / max(spread, 1e-9)
    return Outliers(distance, z, z >= z_limit)
