"""``--engine ray`` on a real local Ray cluster: predict, embed and the probe's extraction give
what the plain commands give, with the same unreadable-file reports and resume."""

from __future__ import annotations

import csv
import logging
import shutil

import pytest

import imgcls
from imgcls.cli.main import main
from imgcls.config import TrainConfig
from imgcls.data.embedding_files import read_embeddings
from tests.conftest import TINY_ARGS, TINY_BACKBONE, across_kernels

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
    # The actors batch other rows on one thread each: kernels may differ (fp32 ~1e-7 on a
    # probability); another row's scores differ by > 1e-2.
    tolerance = across_kernels(imgcls.load(run).config["precision"], 1e-5)
    for path, row in expected.items():
        assert (got[path]["label"], got[path]["error"]) == (row["label"], row["error"])
        if row["probability"]:
            assert float(got[path]["probability"]) == pytest.approx(float(row["probability"]), abs=tolerance)
    assert got[str(corrupt)]["error"]  # reported, as the plain command reports it

    assert main(args) == 0  # a rerun finds every path written and sends nothing to the cluster
    assert "wrote 0 rows" in capsys.readouterr().out and len(_rows(on_ray)) == 37


def test_the_ray_engine_reads_files_and_writes_to_a_file(tmp_path, capsys):
    assert main(["predict", "efficientnet_lite0", str(tmp_path), "--engine", "ray"]) == 2
    assert "--engine ray writes to a file" in capsys.readouterr().err


@pytest.fixture
def photos_with_a_corrupt_file(image_folder, tmp_path):
    photos = shutil.copytree(image_folder, tmp_path / "photos")
    (photos / "red" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not the rest of a png")
    return photos


def test_embed_on_a_ray_cluster_matches_the_plain_command(
    local_cluster, photos_with_a_corrupt_file, tmp_path
):
    photos = photos_with_a_corrupt_file
    run = tmp_path / "run"
    imgcls.train(photos, run, config=TrainConfig(backbone=TINY_BACKBONE, pretrained=False, input_size=64))
    cache = str(tmp_path / "cache")
    common = ["embed", str(photos), "--model", str(run), "--chunk-rows", "10", "--cache-dir", cache]
    plain, on_ray = tmp_path / "plain.parquet", tmp_path / "ray.parquet"
    assert main([*common, "-o", str(plain), "--no-cache"]) == 0
    assert main([*common, "-o", str(on_ray), "--engine", "ray", "--ray-actors", "2"]) == 0
    expected, got = read_embeddings(plain), read_embeddings(on_ray)
    assert got.ids == expected.ids and got.labels == expected.labels  # every row, in order
    # Other batches and threads (features up to ~1: fp32 ~2e-7 apart, measured); another
    # image's vector is off by > 1e-2 somewhere.
    assert got.vectors == pytest.approx(
        expected.vectors, abs=across_kernels(imgcls.load(run).config["precision"], 1e-5)
    )
    assert got.metadata["unreadable"] == expected.metadata["unreadable"]
    assert list(got.metadata["unreadable"]) == ["red/corrupt.png"]
    # The actors wrote what they computed into the cache: a local run forwards nothing.
    again = imgcls.embed(photos, model=run, cache_dir=tmp_path / "cache")
    assert again.forwarded == 0 and len(again.table) == len(expected)


def test_train_extracts_probe_features_on_a_ray_cluster(
    local_cluster, photos_with_a_corrupt_file, tmp_path, caplog
):
    photos = photos_with_a_corrupt_file
    cache = str(tmp_path / "cache")
    caplog.set_level(logging.INFO)
    args = ["train", str(photos), *TINY_ARGS, "--cache-dir", cache, "--workers", "0"]
    assert main([*args, "-o", str(tmp_path / "ray"), "--engine", "ray", "--ray-actors", "2"]) == 0
    assert "features on Ray: 36 computed, 0 found in the cache, 1 unreadable" in caplog.text
    assert "features: 0 computed, 36 from cache, 1 unreadable" in caplog.text  # the run's own pass
    on_ray = imgcls.load(tmp_path / "ray")
    local = imgcls.train(
        photos,
        tmp_path / "local",
        config=TrainConfig(
            backbone=TINY_BACKBONE, pretrained=False, input_size=64, workers=0, use_cache=False
        ),
    )
    # The same features (up to float rounding between processes), so the same head and scores:
    # fp32 features ~1e-7 apart, then the solver's ~1e-5 (test_distributed); bf16 rounds at 7.8e-3.
    assert on_ray.metrics["val"]["accuracy"] == local.metrics["val"]["accuracy"]
    rel = across_kernels(local.config["precision"], 1e-3)
    assert on_ray.metrics["val"]["log_loss"] == pytest.approx(local.metrics["val"]["log_loss"], rel=rel)
    assert list(on_ray.config["unreadable"]) == list(local.config["unreadable"]) == ["red/corrupt.png"]


def test_the_ray_engine_refuses_a_fine_tune_and_a_run_without_the_cache(image_folder, tmp_path, capsys):
    args = ["train", str(image_folder), *TINY_ARGS, "-o", str(tmp_path / "run"), "--engine", "ray"]
    assert main([*args, "--strategy", "finetune"]) == 2
    assert "spread it over processes with torchrun" in capsys.readouterr().err
    assert main([*args, "--no-cache"]) == 2
    assert "through the feature cache" in capsys.readouterr().err


def test_embed_reads_webdataset_shards_on_a_ray_cluster(local_cluster, image_folder, tmp_path):
    from imgcls.data.convert import convert
    from imgcls.data.sources import open_source

    run = tmp_path / "run"
    imgcls.train(
        image_folder, run, config=TrainConfig(backbone=TINY_BACKBONE, pretrained=False, input_size=64)
    )
    shards = tmp_path / "shards"
    convert(open_source(image_folder), shards, to="webdataset", shard_samples=10)
    plain = imgcls.embed(shards, model=run, use_cache=False)
    on_ray = imgcls.embed(shards, model=run, use_cache=False, engine="ray", ray_actors=2)
    assert on_ray.ids == plain.ids and len(on_ray.ids) == 36
    # As above: other batches and threads; another image's vector is off by > 1e-2 somewhere.
    assert on_ray.vectors == pytest.approx(
        plain.vectors, abs=across_kernels(imgcls.load(run).config["precision"], 1e-5)
    )
