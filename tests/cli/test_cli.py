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


def test_usage_errors_are_one_line_with_a_pointer_to_help_and_a_did_you_mean(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["trian"])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.startswith("imgcls: error: argument COMMAND: invalid choice: 'trian'")
    assert "; did you mean train?\nsee 'imgcls --help'\n" in err and "usage:" not in err
    with pytest.raises(SystemExit) as exited:
        main(["train", "--epochs", "x", "data"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "usage:" not in err and len(err.splitlines()) == 2
    assert main(["train"]) == 2
    assert "imgcls train needs DATA" in capsys.readouterr().err


def test_a_mistyped_backbone_gets_each_close_name_once(image_folder, tmp_path, capsys):
    assert main(["train", str(image_folder), "-o", str(tmp_path / "run"), "--backbone", "resnt50"]) == 2
    err = capsys.readouterr().err
    hint = err.split("Did you mean ")[1].split("?")[0]
    names = hint.replace(" or ", ", ").split(", ")
    assert "resnet50" in names and len(names) == len(set(names))


def test_data_and_model_given_the_wrong_way_round_are_named(image_folder, tmp_path, capsys):
    import imgcls
    from imgcls.config import TrainConfig
    from tests.conftest import TINY_BACKBONE

    run = tmp_path / "run"
    imgcls.train(
        image_folder, run, config=TrainConfig(backbone=TINY_BACKBONE, pretrained=False, input_size=64)
    )
    assert main(["evaluate", str(image_folder), str(run)]) == 2
    assert f"{image_folder} holds images: did you swap DATA and MODEL?" in capsys.readouterr().err
    assert main(["train", str(run), "-o", str(tmp_path / "again")]) == 2
    assert (
        "is an imgcls run directory (a trained model), not a data folder; did you swap"
        in capsys.readouterr().err
    )


def test_quiet_by_default_details_under_verbose(image_folder, tmp_path):
    from tests.conftest import TINY_ARGS, run_cli

    run = tmp_path / "run"
    default = run_cli("train", str(image_folder), "-o", str(run), *TINY_ARGS)
    assert "runtime:" not in default.stderr and "val accuracy" in default.stdout
    quiet = run_cli("predict", "-q", str(run), str(image_folder / "red"))
    assert quiet.stderr == "" and len(quiet.stdout.splitlines()) == 12  # the predictions, nothing else
    verbose = run_cli("predict", "-v", str(run), str(image_folder / "red"))
    assert "runtime: onnx (" in verbose.stderr  # train wrote model.onnx; twelve images are few
    assert "STREAM b'IHDR'" not in verbose.stderr  # imgcls's details, not its libraries' debugging
