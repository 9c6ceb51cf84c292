"""imgcls predict --engine ray on a real local Ray cluster: the plain command's predictions."""

from __future__ import annotations

import csv
import shutil

import pytest

import imgcls
from imgcls.cli.main import main
from imgcls.config import TrainConfig
from tests.conftest import TINY_BACKBONE

ray = pytest.importorskip("ray", reason="Ray is the optional ray extra (make test installs it)")


@pytest.fixture(scope="module")
def local_cluster():
    ray.init(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _rows(path):
    with path.open(newline="") as handle:
        return {row["path"]: row for row in csv.DictReader(handle)}


def test_predict_on_a_ray_cluster_matches_the_plain_command(local_cluster, image_folder, tmp_path, capsys):
    run = tmp_path / "run"
    config = TrainConfig(backbone=TINY_BACKBONE, pretrained=False, input_size=64)
    imgcls.train(image_folder, run, config=config)
    photos = shutil.copytree(image_folder, tmp_path / "photos")
    corrupt = photos / "red" / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not the rest of a png")

    plain, on_ray = tmp_path / "plain.csv", tmp_path / "ray.csv"
    assert main(["predict", str(run), str(photos), "--output", str(plain), "--runtime", "torch"]) == 0
    args = [
        "predict",
        str(run),
        str(photos),
        "--output",
        str(on_ray),
        "--runtime",
        "torch",
        "--engine",
        "ray",
    ]
    assert main([*args, "--ray-actors", "2"]) == 0
    assert "wrote 37 rows" in capsys.readouterr().out
    expected, got = _rows(plain), _rows(on_ray)
    assert list(got) == list(expected)  # every file, in the same order
    for path, row in expected.items():
        assert (got[path]["label"], got[path]["error"]) == (row["label"], row["error"])
        if row["probability"]:
            assert float(got[path]["probability"]) == pytest.approx(float(row["probability"]), abs=1e-5)
    assert got[str(corrupt)]["error"]  # reported, as the plain command reports it

    assert main(args) == 0  # a rerun finds every path written and sends nothing to the cluster
    assert "wrote 0 rows" in capsys.readouterr().out and len(_rows(on_ray)) == 37


def test_the_ray_engine_reads_files_and_writes_to_a_file(tmp_path, capsys):
    assert main(["predict", "efficientnet_lite0", str(tmp_path), "--engine", "ray"]) == 2
    assert "--engine ray writes to a file" in capsys.readouterr().err
