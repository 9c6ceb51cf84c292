"""What ``imgcls models`` reports: each named backbone, its input size, size and weights."""

from __future__ import annotations

from typing import Any

from imgcls.models.backbone import count_parameters
from imgcls.models.registry import BACKBONES, resolve_preprocessing
from imgcls.models.weights import locate_local_weights


def describe_backbones() -> list[dict[str, Any]]:
    """One row per registry entry; never touches the network."""
    rows = []
    for spec in BACKBONES.values():
        local = locate_local_weights(spec)
        rows.append(
            {
                "name": spec.name,
                "timm_arch": spec.timm_arch,
                "pretrained_tag": spec.pretrained_tag,
                "input_size": resolve_preprocessing(spec, for_features=False).input_size,
                "feature_input_size": resolve_preprocessing(spec).input_size,
                "params": count_parameters(spec),
                "weights_available": local is not None,
                "weights_source": local.kind if local else None,
                "weights_path": str(local.path) if local else None,
                "weights": local.describe()
                if local
                else "none (pass `weights=FILE`, or online: hub download)",
                "description": spec.description,
            }
        )
    return rows
