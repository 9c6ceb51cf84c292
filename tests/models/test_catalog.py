"""``imgcls models``: every registry entry with its sizes and where its weights are."""

from __future__ import annotations

from imgcls.models.catalog import describe_backbones
from imgcls.models.registry import BACKBONES


def test_every_backbone_is_described_offline_and_the_packaged_lite_weights_are_found():
    rows = {row["name"]: row for row in describe_backbones()}
    assert set(rows) == set(BACKBONES)
    lite0 = rows["efficientnet_lite0"]
    assert lite0["weights_available"] and lite0["weights_source"] == "package"
    assert lite0["input_size"] == 224 and lite0["feature_input_size"] >= lite0["input_size"]
    assert 4_000_000 < lite0["params"] < 6_000_000
    for row in rows.values():
        if not row["weights_available"]:
            assert "pass `weights=FILE`" in row["weights"]
