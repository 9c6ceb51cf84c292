"""The saved-model format: safetensors + JSON, read back the same, refused by name when it is
not imgcls's, newer than this imgcls, or a folder of images given in its place."""

from __future__ import annotations

import json

import pytest
import torch

import imgcls
from imgcls.config import TrainConfig, installed_version
from imgcls.errors import ModelFormatError
from imgcls.inference.model_format import read_saved_model, versions

TINY = TrainConfig(backbone="test_efficientnet", pretrained=False, input_size=64, onnx=False, report=False)


@pytest.fixture
def saved(image_folder, tmp_path):
    imgcls.train(image_folder, tmp_path / "run", config=TINY)
    return tmp_path / "run"


def test_a_saved_model_reads_back_the_same_network_classes_and_preprocessing(saved):
    first = read_saved_model(saved)
    again = read_saved_model(saved / "model")
    assert first.classes == again.classes == ["blue", "green", "red"]
    assert first.preprocessing == again.preprocessing and first.preprocessing.input_size == 64
    for (name, a), (_, b) in zip(
        first.model.state_dict().items(), again.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert first.config["versions"]["imgcls"] == installed_version() == versions()["imgcls"]


def test_a_config_that_is_not_imgcls_or_is_newer_is_refused_by_name(saved):
    config_path = saved / "model" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "format_version": config["format_version"] + 1}))
    with pytest.raises(ModelFormatError, match="newer than this imgcls"):
        read_saved_model(saved)
    config_path.write_text(json.dumps({**config, "format": "someone-else"}))
    with pytest.raises(ModelFormatError, match="was not written by imgcls"):
        read_saved_model(saved)
    config_path.write_text("{not json")
    with pytest.raises(ModelFormatError, match="is not valid JSON"):
        read_saved_model(saved)


def test_a_folder_of_images_given_as_the_model_says_so(image_folder):
    with pytest.raises(ModelFormatError, match="holds images: did you swap DATA and MODEL"):
        read_saved_model(image_folder)
