"""imgcls's EfficientNet-Lite is timm's tf_efficientnet_lite: keys, outputs, randomness."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from imgcls.models._network_split import split_network
from imgcls.models.backbone import create_network
from imgcls.models.efficientnet_lite import VARIANTS, DropPath, EfficientNetLite
from imgcls.models.registry import get_backbone
from tests.conftest import write_class_folders


@pytest.mark.parametrize("arch", sorted(VARIANTS))
def test_same_state_dict_and_outputs_as_timm(arch: str) -> None:
    reference = timm.create_model(arch, num_classes=5).eval()
    ours = EfficientNetLite(arch, num_classes=5).eval()
    expected = reference.state_dict()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in expected.items()]
    ours.load_state_dict(expected, strict=True)
    x = torch.randn(2, 3, 67, 70)  # odd and even sides: "same" padding pads asymmetrically
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))
        features = ours.forward_features(x)
        assert torch.equal(features, reference.forward_features(x))
        pooled = reference.forward_head(features, pre_logits=True)
        assert torch.equal(ours.forward_head(features, pre_logits=True), pooled)
    assert ours.group_matcher() == reference.group_matcher()
    assert ours.pretrained_cfg["architecture"] == reference.pretrained_cfg["architecture"]


def test_training_mode_draws_the_same_drop_paths_as_timm() -> None:
    arch = "tf_efficientnet_lite0"
    reference = timm.create_model(arch, num_classes=3, drop_rate=0.2, drop_path_rate=0.3).train()
    ours = EfficientNetLite(arch, num_classes=3, drop_rate=0.2, drop_path_rate=0.3).train()
    ours.load_state_dict(reference.state_dict())
    rates = [m.rate for m in ours.modules() if isinstance(m, DropPath)]
    assert rates == [getattr(b.drop_path, "drop_prob", 0.0) for stage in reference.blocks for b in stage]
    x = torch.randn(4, 3, 64, 64)
    torch.manual_seed(1)
    expected = reference(x)
    torch.manual_seed(1)
    assert torch.allclose(ours(x), expected, atol=1e-6)


def test_the_registry_builds_it_and_the_stage_split_works() -> None:
    model = create_network(get_backbone("efficientnet_lite0"), num_classes=4).eval()
    assert isinstance(model, EfficientNetLite)
    split = split_network(model, 2)
    assert split is not None
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(split.top(split.trunk(x)), model(x))
    model.reset_classifier(7)
    assert model.get_classifier().out_features == 7


def test_training_a_probe_on_lite_imports_neither_timm_nor_torchvision(tmp_path: Path) -> None:
    """What the ~3 s saving rests on: nothing on the probe path pulls timm (or torchvision) in."""
    data = write_class_folders(tmp_path / "data", per_class=6)
    script = (
        "import sys\n"
        "from imgcls.cli.main import main\n"
        f"code = main(['train', {str(data)!r}, '--output', {str(tmp_path / 'run')!r}, '--no-pretrained',"
        " '--input-size', '32', '--no-cache', '--no-report', '-q'])\n"
        "assert code == 0, code\n"
        "loaded = sorted(m for m in ('timm', 'torchvision') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_onnx_export_runs_in_onnx_runtime_with_the_same_outputs(tmp_path: Path) -> None:
    """Exporters need kernels of known shape, so the export pads the input instead."""
    import onnxruntime as ort

    model = EfficientNetLite("tf_efficientnet_lite0", num_classes=3).eval()
    x = torch.randn(2, 3, 64, 64)
    path = tmp_path / "lite.onnx"
    torch.onnx.export(
        model, (x[:1],), str(path), input_names=["image"], dynamic_axes={"image": {0: "batch"}}, dynamo=False
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        # ONNX Runtime's kernels against oneDNN's, fp32 through ~50 layers; a wrong graph or
        # padding is off by > 1e-1.
        torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=1e-4, atol=1e-4)


def test_every_batchnorm_folds_into_its_convolution() -> None:
    """The inference copy folds all of them, including those after "same"-padded convolutions."""
    from imgcls.models._batchnorm_fold import fold_batchnorm

    model = EfficientNetLite("tf_efficientnet_lite0", num_classes=3).eval()
    with torch.no_grad():  # non-trivial statistics, so a wrong fold would show
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    folded, count = fold_batchnorm(model, torch.randn(1, 3, 70, 70))
    assert count == norms
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 66, 66)
    with torch.no_grad():
        # Another graph in fp32 through ~50 layers: 1.9e-5 measured on logits up to 36, so
        # relative too; a wrong fold (random statistics above) is off by more than 1e-1.
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
