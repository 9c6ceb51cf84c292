"""Real CIFAR-10 images in every format imgcls reads give identical features and accuracy."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgcls
from imgcls.config import TrainConfig
from imgcls.data.images import load_rgb
from imgcls.data.sources import open_source
from imgcls.training.probe import featurize
from imgcls.training.run_plan import plan_run
from tests.conftest import shared_dataset
from tests.data.cifar_files import CLASSES10, write_cifar10_binary, write_cifar10_python, write_shards

pytestmark = pytest.mark.slow

TRAIN_PER_CLASS, TEST_PER_CLASS = 30, 10


def _decode(folder: Path, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``per_class`` images of each class, interleaved by class as CIFAR's batches are."""
    pixels, labels = [], []
    for index in range(per_class):
        for label, name in enumerate(CLASSES10):
            path = sorted((folder / name).iterdir())[index]
            pixels.append(np.asarray(load_rgb(path)))
            labels.append(label)
    return np.stack(pixels), np.array(labels)


def _write_folder_manifest_and_shards(root: Path, train: tuple, test: tuple) -> tuple[Path, Path, Path]:
    """PNG files named after their CIFAR batch and row, so that every format lists each class's
    images in the same order (and so draws the same validation images); a CSV manifest of
    them; and WebDataset shards holding the same PNG bytes under the same keys."""
    rows = []
    samples: dict[str, list[tuple[str, bytes, int]]] = {"train": [], "test": []}
    named = [
        (f"data_batch_{i % 5 + 1}_{i // 5:05d}", "train", image, label)
        for i, (image, label) in enumerate(zip(*train, strict=True))
    ]
    named += [
        (f"test_batch_{i:05d}", "test", image, label)
        for i, (image, label) in enumerate(zip(*test, strict=True))
    ]
    for stem, split, image, label in named:
        path = root / split / CLASSES10[label] / f"{stem}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        rows.append(f"{path.relative_to(root).as_posix()},{CLASSES10[label]},{split}\n")
        samples[split].append((stem, path.read_bytes(), int(label)))
    manifest = root / "images.csv"
    manifest.write_text("path,label,split\n" + "".join(rows))
    return root, manifest, write_shards(root.parent / "shards", samples)


def _pixels_key(image: object) -> str:
    return hashlib.blake2b(np.asarray(load_rgb(image)).tobytes()).hexdigest()


def test_the_same_images_in_five_formats_give_identical_features_and_accuracy(tmp_path):
    shared = shared_dataset("cifar10_subset")
    train = _decode(shared / "train", TRAIN_PER_CLASS)
    test = _decode(shared / "test", TEST_PER_CLASS)
    folder, manifest, shards = _write_folder_manifest_and_shards(tmp_path / "folder", train, test)
    sources = {
        "class folders": folder,
        "CSV manifest": manifest,
        "CIFAR-10 python batches": write_cifar10_python(tmp_path / "py", train, test),
        "CIFAR-10 binary batches": write_cifar10_binary(tmp_path / "bin", train, test),
        "WebDataset shards": shards,
    }
    config = TrainConfig(report=False)  # the default backbone with its packaged weights
    features, accuracy = {}, {}
    for name, source in sources.items():
        scan = open_source(source)
        featured = featurize(scan, plan_run(scan, config))
        keys = [
            hashlib.blake2b(np.asarray(load_rgb(scan.absolute(r))).tobytes()).hexdigest()
            for r in featured.records
        ]
        features[name] = dict(zip(keys, featured.features, strict=True))
        clf = imgcls.train(source, tmp_path / "runs" / name, config=config)
        accuracy[name] = (clf.metrics["val"]["accuracy"], clf.metrics["test"]["accuracy"])
    reference = features["class folders"]
    assert len(reference) == 10 * (TRAIN_PER_CLASS + TEST_PER_CLASS)
    for name, found in features.items():
        assert found.keys() == reference.keys(), name
        # Exact: every format feeds the network full 8-image chunks of the same crops (400
        # images), and an image's features do not depend on the others in its chunk.
        for key, vector in found.items():
            np.testing.assert_array_equal(vector, reference[key], err_msg=name)
    assert len(set(accuracy.values())) == 1, accuracy
    assert accuracy["class folders"][1] > 0.5  # ten classes from 300 images: far above chance
