"""Shared fixtures: generated image folders, an offline environment, a private feature cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
TINY_BACKBONE = "test_efficientnet"
TINY_ARGS = ["--backbone", TINY_BACKBONE, "--no-pretrained", "--input-size", "64"]

# Tests never touch the network: weight lookups must fail fast instead of probing the hub.
os.environ["IMGCLS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path_factory.getbasetemp() / "feature-cache"
    monkeypatch.setenv("IMGCLS_CACHE_DIR", str(cache))
    return cache


COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}


def make_image(colour: tuple[int, int, int], seed: int, size: int = 32) -> Image.Image:
    """A noisy patch of one colour with a random bright square: easy to tell classes apart."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 25, (size, size, 3)), 0, 255)
    x, y = rng.integers(0, size // 2, 2)
    pixels[y : y + size // 4, x : x + size // 4] = 255
    return Image.fromarray(pixels.astype(np.uint8))


# Floats that two code paths compute with kernels that may differ (another batch size or thread
# count, fused, folded or compiled layers, another CPU's oneDNN/MKL kernels) agree to about the
# unit roundoff of the precision they ran in, times a modest factor for depth and sum length;
# never bit for bit. bf16 keeps 8 significant bits (eps 7.8e-3): one activation rounding the
# other way moves a loss or a probability by ~1e-3 (measured 1.1e-3 on the loss of a compiled
# fine-tune), so 1e-2. Paths that replay the same kernels in the same order on one machine (a
# resume, a second run with the same seed) are compared exactly instead.
BF16_ACROSS_KERNELS = 1e-2


def across_kernels(precision: str, fp32: float) -> float:
    """The tolerance for a comparison whose fp32 bound is ``fp32``, at ``precision``."""
    return max(fp32, BF16_ACROSS_KERNELS) if precision == "bf16" else fp32


def write_class_folders(
    root: Path, per_class: int = 12, classes: tuple[str, ...] = ("red", "green", "blue")
) -> Path:
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            make_image(COLOURS[name], seed=1000 * c + i).save(folder / f"{name}_{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three colour classes, 12 images each, class-folder layout."""
    return write_class_folders(tmp_path / "colours")


def shared_dataset(name: str) -> Path:
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"real data set {name} not available: {path} is absent (needs ../shared)")
    return path


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``imgcls ARGS`` in a fresh process; with ``check``, a failure shows its stderr."""
    result = subprocess.run([sys.executable, "-m", "imgcls", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"imgcls {' '.join(args)} failed:\n{result.stderr}")
    return result
