"""Decoding ahead in a child process: the same crops as the loaders, used only where they fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from imgcls.data._prefetch import DecodePrefetch, prefetch_folder
from imgcls.data.images import load_rgb
from imgcls.data.preprocessing import Preprocessing
from imgcls.data.transforms import eval_crop
from imgcls.models.features import FeatureCache, extract_features
from imgcls.models.registry import preprocessing_without_timm
from imgcls.system.profiling import PROFILE
from tests.conftest import REPO, write_class_folders

PRE = Preprocessing(input_size=48, crop_pct=0.875, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3)


def _files(root: Path) -> list[Path]:
    folder = write_class_folders(root, per_class=4, classes=("red", "blue"))
    (folder / "red" / "broken.png").write_bytes(b"not an image")
    return sorted(folder.rglob("*.png"))


def test_prefetched_crops_are_the_loaders_and_unreadable_files_say_why(tmp_path: Path) -> None:
    paths = _files(tmp_path)
    prefetch = DecodePrefetch(paths, PRE)
    try:
        for path in paths:
            decoded = prefetch.get(path)
            assert decoded is not None
            if path.name == "broken.png":
                assert decoded.crop is None and decoded.reason == "not an image (format not recognised)"
                continue
            expected = eval_crop(PRE)(load_rgb(path, min_side=PRE.resize_size)).numpy()
            assert decoded.reason is None and np.array_equal(decoded.crop, expected)
        assert prefetch.get(tmp_path / "elsewhere.png") is None
    finally:
        prefetch.close()


def test_images_past_the_memory_cap_are_left_to_the_loader(tmp_path: Path) -> None:
    paths = _files(tmp_path)
    prefetch = DecodePrefetch(paths, PRE, max_bytes=3 * 48 * 48 * 3)
    try:
        assert [prefetch.get(p) is not None for p in paths] == [True] * 3 + [False] * (len(paths) - 3)
    finally:
        prefetch.close()


def test_close_stops_the_child(tmp_path: Path) -> None:
    prefetch = DecodePrefetch(_files(tmp_path), PRE)
    pid = prefetch._pid
    prefetch.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_decoding_turns_false_once_the_child_is_done_and_its_crops_stay_readable(tmp_path: Path) -> None:
    paths = _files(tmp_path)
    prefetch = DecodePrefetch(paths, PRE)
    try:
        deadline = time.monotonic() + 30
        while prefetch.decoding() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not prefetch.decoding()
        assert all(prefetch.get(p) is not None for p in paths)
    finally:
        prefetch.close()  # the child was reaped already: nothing left to stop


def test_the_forward_pass_gives_a_decoding_child_a_core(monkeypatch) -> None:
    from imgcls.models import features

    class _Child:
        busy = True

        def decoding(self) -> bool:
            return self.busy

    threads = [2]  # a two-core machine
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads[-1])
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    child = _Child()
    batch = torch.zeros(1)
    with features._threads_beside(child, lambda x: x) as forward:  # type: ignore[arg-type]
        forward(batch)
        forward(batch)
        child.busy = False
        assert forward(batch) is batch
    assert threads == [2, 1, 2, 2]  # one beside the child, both once it is done, restored after


def test_extraction_with_a_prefetch_gives_the_same_features(tmp_path: Path, monkeypatch) -> None:
    import imgcls.data._prefetch as prefetch_module

    paths = _files(tmp_path)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=0).eval()
    plain = extract_features(model, paths, PRE, cache=FeatureCache(None, ""))
    prefetch = DecodePrefetch(paths[:5], PRE)  # the rest goes through the loader
    monkeypatch.setattr(prefetch_module, "_ACTIVE", prefetch)
    PROFILE.reset()
    try:
        ahead = extract_features(model, paths, PRE, cache=FeatureCache(None, ""))
    finally:
        prefetch.close()
    assert PROFILE.counts["decode + crop"] == 5 and PROFILE.counts["decode"] == len(paths) - 5
    assert ahead.failures == plain.failures and len(ahead.failures) == 1
    torch.testing.assert_close(torch.from_numpy(ahead.features), torch.from_numpy(plain.features))


def test_prefetch_folder_needs_a_known_backbone_and_torch_not_yet_loaded(tmp_path: Path) -> None:
    import imgcls.data._prefetch as prefetch_module

    folder = write_class_folders(tmp_path / "data", per_class=2, classes=("red", "blue"))
    with prefetch_folder(
        folder, preprocessing_without_timm("efficientnet_lite0", 64)
    ):  # torch is loaded in this process
        assert prefetch_module._ACTIVE is None
    with prefetch_folder(tmp_path / "missing", preprocessing_without_timm("efficientnet_lite0", 64)):
        assert prefetch_module._ACTIVE is None


def test_the_cli_decodes_ahead_while_it_imports_torch(tmp_path: Path) -> None:
    folder = write_class_folders(tmp_path / "data", per_class=6, classes=("red", "blue"))
    command = [
        sys.executable,
        "-m",
        "imgcls",
        "train",
        str(folder),
        "--output",
        str(tmp_path / "run"),
        "--backbone",
        "efficientnet_lite0",
        "--no-pretrained",
        "--input-size",
        "64",
        "--profile",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    assert "decode + crop (prefetch process)" in out.stdout + out.stderr
    assert (tmp_path / "run" / "model").is_dir()


def test_predict_decodes_ahead_with_a_saved_model_in_torch(tmp_path: Path) -> None:
    import imgcls
    from imgcls.config import TrainConfig

    folder = write_class_folders(tmp_path / "data", per_class=6, classes=("red", "blue"))
    run = tmp_path / "run"
    tiny = TrainConfig(backbone="test_efficientnet", pretrained=False, input_size=64)
    imgcls.train(folder, run, config=tiny)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    command = [sys.executable, "-m", "imgcls", "predict", str(run), str(folder), "--runtime", "torch"]
    out = subprocess.run(
        [*command, "--profile", "--json"], capture_output=True, text=True, env=env, check=True
    )
    assert "decode + crop (prefetch process)" in out.stdout + out.stderr
    predicted = json.loads(out.stdout[: out.stdout.rindex("]") + 1])
    in_process = imgcls.load(run).predict_paths([str(folder)]).predictions  # torch loaded: no prefetch
    assert [p["path"] for p in predicted] == [p.path for p in in_process] and len(predicted) == 12
    for row, prediction in zip(predicted, in_process, strict=True):
        assert row["predictions"][0]["label"] == prediction.label
        assert row["predictions"][0]["probability"] == pytest.approx(prediction.probability, abs=1e-5)
