"""The command line: fast start, model listing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from imgcls.cli.main import main
from tests.conftest import TINY_ARGS


def test_help_does_not_import_torch():
    code = (
        "import sys, imgcls.cli.main\n"
        "try:\n    imgcls.cli.main.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "usage: imgcls" in out.stdout
    assert out.stdout.strip().endswith("False")


def test_models_lists_backbones_with_weight_availability():
    out = subprocess.run(
        [sys.executable, "-m", "imgcls", "models", "--json"], capture_output=True, text=True, check=True
    )
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    required = {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet50", "densenet121"}
    assert required | {"inception_v3", "inception_v4", "resnetv2_50", "efficientnet_b0"} <= set(rows)
    lite0 = rows["efficientnet_lite0"]
    assert lite0["weights_available"] and lite0["weights_source"] == "package"
    assert lite0["input_size"] == 224 and 4_000_000 < lite0["params"] < 5_000_000
    assert rows["inception_v3"]["input_size"] == 299
    text = subprocess.run(
        [sys.executable, "-m", "imgcls", "models"], capture_output=True, text=True, check=True
    ).stdout
    assert "efficientnet_lite2" in text and "package" in text


def test_every_command_has_working_help(capsys):
    import pytest

    from imgcls.cli.main import COMMANDS, main

    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0, command
        assert f"usage: imgcls {command}" in capsys.readouterr().out


def test_library_errors_name_settings_and_the_cli_shows_their_flags(image_folder, tmp_path, capsys):
    from imgcls.cli._options import as_flags
    from imgcls.config import TrainConfig
    from imgcls.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        TrainConfig(weights="w.pth", pretrained=False)
    assert "`weights` and `pretrained=False`" in str(raised.value)  # what a Python user reads
    assert as_flags(str(raised.value)).startswith("--weights and --no-pretrained contradict")
    assert as_flags("pass `check_images=PATH...` or `use_cache=False`, `overwrite=True`") == (
        "pass --check-images PATH... or --no-cache, --overwrite"
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("x")
    assert main(["train", str(image_folder), "--output", str(run), *TINY_ARGS]) == 2
    assert "choose another --output or pass --overwrite" in capsys.readouterr().err
