"""Device choice and the device plumbing, on this CPU machine: ``--device`` is resolved once and
every stage that runs a network (extraction, fine-tuning, evaluation, serving) is handed that
device. With CUDA reported available (monkeypatched), networks and batches are not really
moved: ``place`` records where each stage asked for them to go."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

import imgcls
from imgcls.cli.main import main
from imgcls.config import TrainConfig
from imgcls.errors import ConfigError
from imgcls.system import devices
from imgcls.system.devices import resolve_device
from imgcls.system.precision import resolve_precision
from tests.conftest import TINY_ARGS, TINY_BACKBONE

CUDA = torch.device("cuda", 0)  # what auto picks: the first GPU


def _report(monkeypatch, *, gpus: int, mps: bool = False, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


def test_auto_prefers_cuda_then_mps_then_the_cpu(monkeypatch):
    _report(monkeypatch, gpus=2, mps=True)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    _report(monkeypatch, gpus=0, mps=True)
    assert resolve_device("auto") == torch.device("mps")
    _report(monkeypatch, gpus=0)
    assert resolve_device("auto") == torch.device("cpu")


def test_a_device_this_machine_lacks_is_an_error_that_says_what_it_has(monkeypatch):
    _report(monkeypatch, gpus=0)
    with pytest.raises(ConfigError, match=r"`device=cuda` was asked for, but this machine has only a CPU"):
        resolve_device("cuda")
    _report(monkeypatch, gpus=1)
    with pytest.raises(ConfigError, match=r"`device=cuda:3` .* has 1 CUDA device \(cuda:0\) and a CPU"):
        resolve_device("cuda:3")
    with pytest.raises(ConfigError, match="unknown `device` 'tpu'"):
        resolve_device("tpu")


def test_half_precision_resolves_on_a_gpu_and_is_refused_on_a_cpu(monkeypatch):
    _report(monkeypatch, gpus=1, bf16=False)
    assert resolve_precision("fp16", CUDA) == "fp16"
    assert resolve_precision("auto", CUDA) == "fp16"  # no bf16 on this GPU
    with pytest.raises(ConfigError, match="`precision=fp16` needs a GPU"):
        resolve_precision("fp16", torch.device("cpu"))


def test_the_command_line_names_the_problem_without_a_traceback(image_folder, tmp_path, capsys):
    args = ["train", str(image_folder), "-o", str(tmp_path / "run"), *TINY_ARGS]
    assert main([*args, "--precision", "fp16", "--device", "cpu"]) == 2
    assert "imgcls: error: --precision fp16 needs a GPU" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*args, "--device", "cuda"]) == 2
        error = capsys.readouterr().err
        assert "--device cuda was asked for, but this machine has only a CPU" in error
        assert "Traceback" not in error
    with pytest.raises(SystemExit):
        main([*args, "--device", "gpu0"])
    assert "unknown `device` 'gpu0'" in capsys.readouterr().err


@pytest.fixture
def recorded(monkeypatch) -> list[tuple[str, torch.device]]:
    """Report one CUDA device; record (stage module, device) for every ``place`` and keep
    everything where it is."""
    # Loaded before the GPU is faked: importing timm imports torch._dynamo, which fails while
    # torch reports a device it cannot query (the test then depended on another having run first).
    import timm  # noqa: F401

    import imgcls.inference.classifier as classifier
    import imgcls.inference.encoder as encoder
    import imgcls.models.features as features
    import imgcls.training._loop as loop
    import imgcls.training._tasks as tasks
    import imgcls.training.finetune as finetune
    import imgcls.training.knn_head as knn_head
    import imgcls.training.linear_head as linear_head
    import imgcls.training.mlp_head as mlp_head
    import imgcls.training.probe as probe

    _report(monkeypatch, gpus=1)
    # The optimiser asks the accelerator whether it is capturing a CUDA graph; there is none.
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda check_available=False: None)
    calls: list[tuple[str, torch.device]] = []
    for module in (
        classifier,
        encoder,
        features,
        loop,
        tasks,
        finetune,
        probe,
        linear_head,
        mlp_head,
        knn_head,
    ):

        def place(item, device, _name=module.__name__):
            calls.append((_name.rsplit(".", 1)[1], torch.device(device)))
            return item

        monkeypatch.setattr(module, "place", place)
        if hasattr(module, "pins_memory"):
            monkeypatch.setattr(module, "pins_memory", lambda device: False)  # pinning needs a real GPU
    monkeypatch.setattr(devices, "place", lambda item, device: item)
    return calls


def _stages(calls: list[tuple[str, torch.device]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for stage, device in calls:
        found.setdefault(stage, set()).add(device.type)
    return found


def test_every_stage_gets_the_gpu_that_auto_picks(recorded, image_folder, tmp_path):
    config = TrainConfig(backbone=TINY_BACKBONE, pretrained=False, input_size=64, workers=0)
    probe = imgcls.train(image_folder, tmp_path / "probe", config=config, cache_dir=str(tmp_path / "cache"))
    assert _stages(recorded)["probe"] == {"cuda"}  # extraction ran its network on the GPU
    assert _stages(recorded)["features"] == {"cuda"}  # and sent its batches there
    assert _stages(recorded)["linear_head"] == {"cuda"}  # the head's solver ran there too
    assert probe.config["precision"] == "bf16"  # resolved for the GPU, not the CPU
    for kind in ("mlp", "knn"):
        recorded.clear()
        imgcls.train(
            image_folder, tmp_path / kind, config=config, head=kind, cache_dir=str(tmp_path / "cache")
        )
        assert _stages(recorded)[f"{kind}_head"] >= {"cuda"}

    recorded.clear()
    tuned = imgcls.train(
        image_folder, tmp_path / "tuned", config=config, strategy="finetune", epochs=1, use_cache=False
    )
    stages = _stages(recorded)
    assert tuned.config["finetune"]["mode"] == "images"  # a GPU trains the whole network
    assert stages["finetune"] >= {"cuda"} and stages["_loop"] == {"cuda"} and stages["_tasks"] == {"cuda"}

    recorded.clear()
    clf = imgcls.load(tmp_path / "tuned", device="auto")
    assert clf.device == CUDA
    clf.evaluate(image_folder, split="val")
    assert _stages(recorded) == {"classifier": {"cuda"}, "features": {"cuda"}}

    from fastapi.testclient import TestClient

    from imgcls.deploy.server import create_app
    from imgcls.inference.loading import open_model

    recorded.clear()
    opened = open_model(tmp_path / "tuned", runtime="auto", device="auto")
    assert opened.runtime == "torch" and opened.predictor.device == CUDA
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(buffer, "PNG")
    with TestClient(create_app(opened.predictor, runtime=opened.runtime)) as client:
        answer = client.post("/predict", files=[("file", ("red.png", buffer.getvalue()))])
    assert answer.status_code == 200
    assert ("classifier", CUDA) in recorded  # the server's batches ran on the GPU


def test_the_cache_never_mixes_features_of_different_kinds_of_device():
    from imgcls.data.preprocessing import Preprocessing
    from imgcls.models.features import feature_space

    network = torch.nn.Conv2d(3, 4, 1)
    pre = Preprocessing(64, 0.875, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    cpu = feature_space(network, pre, precision="bf16")
    gpu = feature_space(network, pre, precision="bf16", device_type="cuda")
    assert cpu != gpu and cpu == feature_space(network, pre, precision="bf16", device_type="cpu")


def test_forward_batches_and_loaders_are_sized_for_the_device(
    monkeypatch,
):
    from imgcls.system.devices import forward_batch, loader_workers

    cpu = torch.device("cpu")
    assert forward_batch(None, cpu) == 32 and forward_batch(None, CUDA) == 256  # a GPU wants hundreds
    assert forward_batch(8, CUDA) == 8
    assert loader_workers(None, 100, cpu) == 0 and loader_workers(None, 1000, cpu) == 1
    assert loader_workers(3, 10, cpu) == 3  # asked for: as asked
    monkeypatch.setattr(devices, "usable_cores", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE", raising=False)
    assert loader_workers(None, 1000, CUDA) == 15  # one core runs this process
    assert loader_workers(None, 10, CUDA, inline_below=0) == 15  # training always uses loaders
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four processes of a run share the cores
    assert loader_workers(None, 1000, CUDA) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "8(x2)")
    assert loader_workers(None, 1000, CUDA) == 1


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> str:
    from tests.conftest import write_class_folders

    root = tmp_path_factory.mktemp("tiny-run")
    data = write_class_folders(root / "data", per_class=8)
    config = TrainConfig(backbone=TINY_BACKBONE, pretrained=False, input_size=64, workers=0, report=False)
    imgcls.train(data, root / "run", config=config)
    return str(root / "run")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
@pytest.mark.parametrize("command", ["predict", "evaluate", "embed", "export", "serve", "doctor"])
def test_every_command_that_runs_a_network_refuses_a_gpu_it_does_not_have(command, tiny_run, capsys):
    data = str(Path(tiny_run).parent / "data")
    args = {
        "predict": ["predict", tiny_run, data],
        "evaluate": ["evaluate", tiny_run, data],
        "embed": ["embed", data, "--model", tiny_run, "-o", str(Path(tiny_run).parent / "vectors.npy")],
        "export": ["export", tiny_run],
        "serve": ["serve", tiny_run],
        "doctor": [
            "doctor",
            data,
            "-o",
            str(Path(tiny_run).parent / "doctor"),
            "--backbone",
            TINY_BACKBONE,
            "--no-pretrained",
            "--input-size",
            "64",
        ],
    }[command]
    assert main([*args, "--device", "cuda"]) == 2
    error = capsys.readouterr().err
    assert "imgcls: error: --device cuda was asked for, but this machine has only a CPU" in error
    assert "Traceback" not in error


def test_extraction_sizes_its_loaders_by_the_images_the_cache_lacks(monkeypatch, image_folder, tmp_path):
    import imgcls.models.features as features

    asked: list[int] = []
    sized = features.loader_workers

    def recording(workers, n_images, device, **options):
        asked.append(n_images)
        return sized(workers, n_images, device, **options)

    monkeypatch.setattr(features, "loader_workers", recording)
    config = TrainConfig(backbone=TINY_BACKBONE, pretrained=False, input_size=64, report=False)
    cache = str(tmp_path / "cache")
    imgcls.train(image_folder, tmp_path / "first", config=config, cache_dir=cache)
    assert asked and asked[0] > 0  # every image to compute
    asked.clear()
    imgcls.train(image_folder, tmp_path / "again", config=config, cache_dir=cache)
    assert asked == [0]  # all cached: no loader process to start
