"""Export to ONNX and TorchScript with a parity check; ONNX inference without torch."""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from torch import nn

import imgcls
from imgcls.config import TrainConfig
from imgcls.deploy.export import ExportError, export_model
from imgcls.errors import ConfigError, ModelFormatError
from imgcls.inference.classifier import Classifier

# fp32: exports are fp32, so exact parity is with the fp32 torch path (bf16 models differ ~1e-3).
# No export at train time: these tests make their own.
TINY = TrainConfig(
    backbone="test_efficientnet", pretrained=False, input_size=64, precision="fp32", onnx=False
)


@pytest.fixture(scope="module")
def real_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("real")
    paths = []
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        path = folder / f"{name}.png"
        Image.fromarray(getattr(skimage.data, name)()).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def trained(image_folder, tmp_path):
    imgcls.train(image_folder, tmp_path / "run", config=TINY)
    return tmp_path / "run"


def test_onnx_and_torchscript_exports_match_pytorch_on_real_images(trained, real_images):
    onnx_report = export_model(trained, format="onnx", check_images=real_images)
    script_report = export_model(trained, format="torchscript", check_images=real_images)
    for report in (onnx_report, script_report):
        assert report.images == 4
        # float32 rounding in other kernels: far below the limit, a thousandth of the spread.
        assert (
            report.max_abs_logit_diff
            <= report.allowed_logit_diff
            == pytest.approx(1e-3 * max(report.logit_spread, 1.0))
        )
        assert report.top1_agreement == 1.0
    assert onnx_report.path == trained / "model" / "model.onnx"
    extra = {"imgcls.json": ""}
    loaded = torch.jit.load(str(script_report.path), _extra_files=extra)
    assert json.loads(extra["imgcls.json"])["classes"] == ["blue", "green", "red"]
    assert loaded(torch.zeros(3, 3, 64, 64)).shape == (3, 3)  # dynamic batch


def test_onnx_model_predicts_in_a_process_that_never_imports_torch(trained, real_images):
    export_model(trained, format="onnx", check_images=real_images)
    expected = [imgcls.load(trained).predict(p).to_dict() for p in real_images]
    script = (
        "import json, sys\n"
        "from imgcls.cli.main import main\n"
        "code = main(['predict', sys.argv[1], *sys.argv[2:], '--runtime', 'onnx', '--json', '-q'])\n"
        "assert code == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(trained), *map(str, real_images)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    for e, g in zip(expected, got, strict=True):
        assert e["predictions"][0]["label"] == g["predictions"][0]["label"]
        assert e["predictions"][0]["probability"] == pytest.approx(
            g["predictions"][0]["probability"], abs=1e-4
        )
    # The export file itself named as MODEL means its directory, in ONNX Runtime.
    named = script.replace(", '--runtime', 'onnx'", "")
    onnx_file = trained / "model" / "model.onnx"
    out = subprocess.run(
        [sys.executable, "-c", named, str(onnx_file), str(real_images[0])], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["predictions"][0]["label"] == expected[0]["predictions"][0]["label"]
    assert imgcls.load(trained / "model" / "config.json").classes == imgcls.load(trained).classes
    with pytest.raises(ModelFormatError, match=r"model.onnx is a file; a model is the directory that holds"):
        Classifier.load(onnx_file)


def test_failed_parity_keeps_the_previous_export(trained, real_images):
    good = export_model(trained, format="onnx", check_images=real_images).path.read_bytes()
    with pytest.raises(ExportError, match="does not reproduce"):
        export_model(trained, format="onnx", check_images=real_images, tolerance=-1.0)  # impossible limit
    assert (trained / "model" / "model.onnx").read_bytes() == good
    assert not list((trained / "model").glob(".*.tmp"))


class _Renormalised(nn.Module):
    """The network behind another normalisation: inputs made for mean/std 0.5 read as ImageNet's."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x * 0.5 + 0.5 - self.mean) / self.std)


def _one_weight_perturbed(model: nn.Module) -> nn.Module:
    broken = copy.deepcopy(model)
    weight = next(p for name, p in broken.named_parameters() if p.dim() == 4)  # the first convolution
    with torch.no_grad():
        weight[0] += 0.05 * weight.std()  # one output channel's filter moved by a twentieth
    return broken


@pytest.mark.parametrize("fault", [_Renormalised, _one_weight_perturbed], ids=["normalisation", "weight"])
@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_a_wrong_export_fails_the_parity_check_and_says_what_to_do(
    trained, real_images, monkeypatch, format, fault
):
    from imgcls.deploy import export

    writer = getattr(export, f"_export_{format}")
    monkeypatch.setattr(export, f"_export_{format}", lambda model, *rest: writer(fault(model), *rest))
    with pytest.raises(ExportError, match=r"does not reproduce.*allowed.*logit spread.*--tolerance"):
        export_model(trained, format=format, check_images=real_images)
    assert not list((trained / "model").glob("*.onnx")) and not list((trained / "model").glob("*.pt"))


def test_parity_forgives_a_near_tie_but_not_a_decisive_flip():
    from imgcls.deploy.export import ParityVerdict

    expected = np.array([[5.0, 5.0 + 1e-6, -5.0], [8.0, 0.0, -2.0]])
    near_tie = expected + np.array([[2e-6, 0.0, 0.0], [0.0, 0.0, 0.0]])  # rounding reorders a tie
    verdict = ParityVerdict.judge(expected, near_tie, None)
    assert verdict.passed and verdict.agreement == 0.5 and verdict.allowed == pytest.approx(1e-2)
    swapped = expected[:, [1, 0, 2]].copy()
    swapped[1] = [0.0, 8.0, -2.0]  # the second image's answer changed: wrong at any tolerance
    assert not ParityVerdict.judge(expected, swapped, tolerance=100.0).passed
    assert not ParityVerdict.judge(expected, expected + 0.02, None).passed  # beyond 1e-3 of spread 10
    assert ParityVerdict.judge(expected, expected + 0.02, tolerance=0.05).passed  # the user's own limit


def test_export_cli_uses_the_runs_validation_images(trained):
    out = subprocess.run(
        [sys.executable, "-m", "imgcls", "export", str(trained), "--format", "onnx", "--json"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["images"] >= 6 and report["top1_agreement"] == 1.0


def test_onnx_classifier_takes_the_same_inputs_as_the_torch_one(trained, real_images):

    from imgcls.errors import ConfigError
    from imgcls.inference.onnx_runtime import OnnxClassifier

    export_model(trained, format="onnx", check_images=real_images)
    clf = OnnxClassifier.load(trained)
    path = real_images[0]
    by_path = clf.predict(path)
    by_bytes = clf.predict(path.read_bytes())
    by_array = clf.predict(np.asarray(Image.open(path).convert("RGB")))
    assert by_path.label == by_bytes.label == by_array.label
    assert by_path.probability == pytest.approx(by_bytes.probability, abs=1e-6)
    with pytest.raises(ConfigError, match="not available with the ONNX runtime"):
        clf.predict(path, tta=True)


def test_runtime_auto_picks_onnx_runtime_only_for_a_current_export(
    trained, real_images, monkeypatch, caplog, capsys
):
    from imgcls.cli.main import main
    from imgcls.inference import runtime_choice
    from imgcls.inference.runtime_choice import choose_runtime

    assert choose_runtime("auto", trained).reason.startswith("no model.onnx")
    export_model(trained, format="onnx", check_images=real_images)
    choice = choose_runtime("auto", trained)  # an fp32 model: ONNX Runtime beats torch fp32
    assert choice.runtime == "onnx" and choice.onnx is not None
    assert choose_runtime("torch", trained).runtime == "torch"
    assert choose_runtime("auto", trained, tta=True).runtime == "torch"
    assert choose_runtime("auto", "efficientnet_lite0").runtime == "torch"

    config_path = trained / "model" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "precision": "bf16"}))
    monkeypatch.setattr(runtime_choice, "cpu_has_native_bf16", lambda: True)
    assert choose_runtime("auto", trained).runtime == "torch"  # native bf16 is faster still
    many = runtime_choice.ONNX_UP_TO_IMAGES + 1
    assert choose_runtime("auto", trained, images=many).runtime == "torch"
    few = choose_runtime("auto", trained, images=1)  # torch's start-up would outweigh its speed
    assert few.runtime == "onnx" and few.reason.startswith("1 image to predict")
    monkeypatch.setattr(runtime_choice, "cpu_has_native_bf16", lambda: False)
    assert choose_runtime("auto", trained).runtime == "onnx"
    config_path.write_text(json.dumps(config))

    from imgcls.inference.onnx_runtime import OnnxClassifier

    loads = []
    original_load = OnnxClassifier.load.__func__
    monkeypatch.setattr(
        OnnxClassifier, "load", classmethod(lambda cls, path: loads.append(path) or original_load(cls, path))
    )
    with caplog.at_level("DEBUG", logger="imgcls"):
        assert main(["predict", str(trained), str(real_images[0]), "--json"]) == 0
    assert "runtime: onnx (ONNX Runtime beats torch fp32" in caplog.text  # the reason auto chose it
    assert len(loads) == 1  # the session loaded while deciding is the one that predicts
    capsys.readouterr()  # --weights with a model directory: the same answer whatever the runtime
    assert main(["predict", str(trained), str(real_images[0]), "--weights", "x.pth"]) != 0
    assert "a model directory has its own weights" in capsys.readouterr().err

    from safetensors.torch import load_file, save_file

    weights = trained / "model" / "model.safetensors"  # retrained: the export describes old weights
    save_file({k: v + 1.0 if k.endswith("bias") else v for k, v in load_file(weights).items()}, weights)
    stale = choose_runtime("auto", trained)
    assert stale.runtime == "torch" and stale.reason == "model.onnx is out of date"


def test_the_parity_check_runs_where_it_was_asked_and_onnx_says_what_it_cannot_run_on(
    trained, real_images, monkeypatch, capsys
):
    from imgcls.cli.main import main

    report = export_model(trained, format="torchscript", check_images=real_images, device="cpu")
    assert report.device == "cpu" and report.max_abs_logit_diff <= report.allowed_logit_diff
    if not torch.cuda.is_available():
        assert main(["export", str(trained), "--format", "torchscript", "--device", "cuda"]) == 2
        assert "--device cuda was asked for, but this machine has only a CPU" in capsys.readouterr().err
    # With a GPU but an ONNX Runtime without its CUDA provider (the CPU package): auto checks on
    # the CPU, an explicit GPU is an error that says what to do, before anything is written.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert export_model(trained, format="onnx", check_images=real_images).device == "cpu"
    with pytest.raises(ConfigError, match="needs onnxruntime-gpu"):
        export_model(trained, format="onnx", check_images=real_images, device="cuda:0")


class _PythonNumberInTheGraph(nn.Module):
    """Turns a tensor into a Python number, as TF "same" padding does with shapes: tracing warns."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(x.mean() > -1)


def test_tracing_warnings_are_kept_from_the_user():
    import warnings

    from imgcls.deploy.export import _quiet_tracing

    example = torch.zeros(1, 3, 8, 8)
    for quiet in (False, True):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with _quiet_tracing() if quiet else contextlib.nullcontext():
                torch.jit.trace(_PythonNumberInTheGraph(), example)
        traced = [w for w in seen if issubclass(w.category, torch.jit.TracerWarning)]
        assert bool(traced) is not quiet  # without the filter the module does warn


def test_predict_takes_a_folder_or_a_glob_in_either_runtime(trained, image_folder, tmp_path, caplog):
    export_model(trained, format="onnx")
    folder = tmp_path / "new"
    folder.mkdir()
    for path in sorted((image_folder / "red").iterdir())[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.png").write_bytes(b"not an image")
    for runtime in ("torch", "onnx"):
        clf = imgcls.load(trained, runtime=runtime)
        by_folder = clf.predict(folder)
        assert sorted(Path(p.path).name for p in by_folder) == sorted(p.name for p in folder.glob("red_*"))
        assert [p.label for p in by_folder] == ["red"] * 3
        assert [p.path for p in clf.predict(str(folder / "red_*.png"))] == [p.path for p in by_folder]
    assert "1 image(s) could not be read" in caplog.text and "broken.png" in caplog.text
