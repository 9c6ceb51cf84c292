"""The kNN head at size: its bank beside the weights (memory-mapped, the weights file of a
fixed size), its search a chunk of the bank at a time, and models saved before still load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

import imgcls
from imgcls.config import TrainConfig
from imgcls.models import heads
from imgcls.models.heads import KNNHead
from tests.conftest import write_class_folders

TINY = TrainConfig(
    backbone="test_efficientnet", pretrained=False, input_size=64, precision="fp32", head="knn"
)


def test_the_weights_file_does_not_grow_with_the_training_set(tmp_path):
    sizes = {}
    for per_class in (8, 24):
        data = write_class_folders(tmp_path / f"data{per_class}", per_class=per_class)
        run = tmp_path / f"run{per_class}"
        clf = imgcls.train(data, run, config=TINY)
        model = run / "model"
        rows = clf.config["head"]["bank_size"]
        bank = np.load(model / "knn_bank.npy", mmap_mode="r")
        assert bank.shape == (rows, clf.model.get_classifier().in_features) and bank.dtype == np.float32
        assert np.load(model / "knn_labels.npy").shape == (rows,)
        sizes[per_class] = (model / "model.safetensors").stat().st_size
        card = (run / "README.md").read_text()
        assert "`model/knn_bank.npy`" in card and "whatever the number of training images" in card
    assert sizes[8] == sizes[24]


def test_a_reloaded_knn_model_maps_its_bank_and_predicts_the_same(image_folder, tmp_path):
    clf = imgcls.train(image_folder, tmp_path / "run", config=TINY)
    images = sorted(image_folder.rglob("*.png"))[:6]
    expected = [p.to_dict() for p in clf.predict(images)]
    loaded = imgcls.load(tmp_path / "run", runtime="torch")
    assert _mapped_from(loaded.model.get_classifier().bank.data_ptr()).endswith("knn_bank.npy")
    assert [p.to_dict() for p in loaded.predict(images)] == expected


def _mapped_from(address: int) -> str:
    """The file whose mapping holds ``address`` in this process ('' for anonymous memory)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *rest = line.split()
        start, end = (int(x, 16) for x in span.split("-"))
        if start <= address < end:
            return rest[-1] if len(rest) == 5 else ""
    return ""


def test_a_model_saved_with_its_bank_in_the_weights_still_loads(image_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    clf = imgcls.train(image_folder, tmp_path / "run", config=TINY)
    images = sorted(image_folder.rglob("*.png"))[:6]
    expected = [p.label for p in clf.predict(images)]
    model = tmp_path / "run" / "model"
    state = load_file(model / "model.safetensors")
    prefix = next(k for k in state if k.endswith("class_weight")).rsplit(".", 1)[0]
    state[f"{prefix}.bank"] = torch.from_numpy(np.load(model / "knn_bank.npy"))
    state[f"{prefix}.bank_labels"] = torch.from_numpy(np.load(model / "knn_labels.npy"))
    save_file(state, model / "model.safetensors")  # the earlier layout: everything in the weights
    (model / "knn_bank.npy").unlink()
    (model / "knn_labels.npy").unlink()
    assert [p.label for p in imgcls.load(tmp_path / "run", runtime="torch").predict(images)] == expected


def test_a_missing_bank_file_is_named(image_folder, tmp_path):
    import pytest

    from imgcls.errors import ModelFormatError

    imgcls.train(image_folder, tmp_path / "run", config=TINY)
    (tmp_path / "run" / "model" / "knn_bank.npy").unlink()
    with pytest.raises(
        ModelFormatError, match=r"knn_bank\.npy and knn_labels\.npy beside model\.safetensors"
    ):
        imgcls.load(tmp_path / "run", runtime="torch")
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["head"]["type"] == "knn"


def test_searching_the_bank_in_chunks_finds_the_same_neighbours(monkeypatch):
    rng = np.random.default_rng(0)
    bank, labels = torch.from_numpy(rng.normal(size=(1000, 16)).astype(np.float32)), torch.arange(1000) % 5
    queries = torch.from_numpy(rng.normal(size=(40, 16)).astype(np.float32))
    head = KNNHead(bank, labels, 5, k=7)
    whole = head.neighbours(queries, 7)
    monkeypatch.setattr(heads, "BANK_CHUNK", 96)  # eleven chunks, a short last one
    chunked = head.neighbours(queries, 7)
    torch.testing.assert_close(chunked[0], whole[0])
    assert torch.equal(chunked[1], whole[1])  # the same rows (no ties in random data)
    torch.testing.assert_close(head(queries), heads.KNNHead.forward(head, queries))
