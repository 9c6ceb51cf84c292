"""Precision resolution and bf16 features: separate cache entries, recorded in the model."""

from __future__ import annotations

import json

import pytest
import timm
import torch

import imgcls
from imgcls.config import TrainConfig
from imgcls.data.preprocessing import Preprocessing
from imgcls.errors import ConfigError
from imgcls.models.features import feature_space, pooled_features
from imgcls.system.precision import cpu_has_native_bf16, resolve_precision
from tests.conftest import TINY_BACKBONE


def test_auto_precision_follows_the_hardware():
    expected = "bf16" if cpu_has_native_bf16() else "fp32"
    assert resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    with pytest.raises(ConfigError, match="needs a GPU"):
        resolve_precision("fp16", torch.device("cpu"))


def test_bf16_features_are_close_to_fp32_and_cached_apart():
    model = timm.create_model(TINY_BACKBONE, num_classes=3).eval()
    batch = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        full = pooled_features(model, batch)
        half = pooled_features(model, batch, "bf16")
    assert half.dtype == torch.float32
    assert torch.allclose(full, half, rtol=0.05, atol=0.05)
    pre = Preprocessing(64, 0.875, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert feature_space(model, pre) != feature_space(model, pre, precision="bf16")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_saved_model_records_its_precision_and_scores_as_reported(image_folder, tmp_path, precision):
    cfg = TrainConfig(backbone=TINY_BACKBONE, pretrained=False, input_size=64, precision=precision)
    imgcls.train(image_folder, tmp_path / "run", config=cfg)
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved["precision"] == precision
    reloaded = imgcls.load(tmp_path / "run")
    assert reloaded.precision == (precision if cpu_has_native_bf16() else "fp32")
    assert reloaded.evaluate(image_folder, split="val").accuracy == pytest.approx(
        saved["metrics"]["val"]["accuracy"]
    )


def test_finetune_trains_in_the_precision_the_run_plan_resolved_for_its_features(image_folder):
    """With the training fast path (fp32 depthwise layers where bf16 is slow), bf16 steps are
    faster on a CPU with native bf16, so a fine-tune trains in the precision it scores in: the
    one the run plan resolved once."""
    from imgcls.data.sources import open_source
    from imgcls.training.finetune_plan import plan_finetune
    from imgcls.training.run_plan import plan_run

    cpu = torch.device("cpu")
    scan = open_source(image_folder)
    for asked in ("auto", "bf16", "fp32"):
        config = TrainConfig(
            strategy="finetune", precision=asked, backbone="test_efficientnet", pretrained=False
        )
        run = plan_run(scan, config)
        assert run.features.precision == resolve_precision(asked, cpu)
        tuning = plan_finetune(config, n_train=100, device=cpu, trainable=2, precision=run.features.precision)
        assert tuning.precision == tuning.train_precision == run.features.precision
