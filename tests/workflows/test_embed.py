"""``imgcls embed`` and ``imgcls similar``: feature files other tools read, a resume that
recomputes nothing finished, and neighbours that find an image and its resized copy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import skimage.data
from PIL import Image

import imgcls
from imgcls.config import TrainConfig
from imgcls.data.embedding_files import read_embeddings
from imgcls.errors import ConfigError, DataError
from imgcls.inference.similarity import nearest
from tests.conftest import run_cli, write_class_folders

TINY = TrainConfig(backbone="test_efficientnet", pretrained=False, input_size=64, precision="fp32")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny trained model (its backbone is the encoder) and the folder it was trained on."""
    root = tmp_path_factory.mktemp("embed")
    data = write_class_folders(root / "data", per_class=10)
    (data / "red" / "broken.png").write_bytes(b"not a png")
    imgcls.train(data, root / "run", config=TINY)
    return data, root / "run"


def test_parquet_file_reads_in_pandas_and_pyarrow_with_its_metadata(tiny_run, tmp_path):
    data, run = tiny_run
    done = run_cli("embed", str(data), "--model", str(run), "-o", str(tmp_path / "e.parquet"), "--json")
    summary = json.loads(done.stdout)
    assert summary["rows"] == 30 and list(summary["unreadable"]) == ["red/broken.png"]
    frame = pd.read_parquet(tmp_path / "e.parquet")
    assert len(frame) == 30 and set(frame.label) == {"red", "green", "blue"}
    assert frame.embedding.iloc[0].dtype == np.float32 and len(frame.embedding.iloc[0]) == summary["dim"]
    assert frame.id.iloc[0] == "blue/blue_000.png" and frame.path.iloc[0].endswith("blue_000.png")
    metadata = json.loads(pq.read_schema(tmp_path / "e.parquet").metadata[b"imgcls"])
    assert metadata["backbone"] == "test_efficientnet" and len(metadata["weights_digest"]) == 32
    assert metadata["preprocessing"]["input_size"] == 64
    assert metadata["unreadable"] == {"red/broken.png": summary["unreadable"]["red/broken.png"]}


def test_npy_format_holds_the_same_vectors(tiny_run, tmp_path):
    data, run = tiny_run
    parquet = imgcls.embed(data, tmp_path / "e.parquet", model=run)
    npy = imgcls.embed(data, tmp_path / "e.npy", model=run)
    matrix = np.load(tmp_path / "e.npy")
    rows = json.loads((tmp_path / "e.json").read_text())["rows"]
    assert rows["id"] == parquet.ids
    np.testing.assert_array_equal(matrix, parquet.vectors)
    assert npy.table.labels == parquet.table.labels
    assert read_embeddings(tmp_path / "e.npy").metadata == parquet.table.metadata


def test_classifier_embed_and_the_feature_cache_agree_with_the_file(tiny_run, tmp_path):
    data, run = tiny_run
    done = imgcls.embed(data, tmp_path / "e.parquet", model=run)
    assert done.forwarded == 0  # training cached every feature of this backbone and data
    clf = imgcls.load(run)
    images = [data / "blue" / "blue_000.png", data / "red" / "red_001.png"]
    vectors = clf.embed(images)
    rows = [done.ids.index("blue/blue_000.png"), done.ids.index("red/red_001.png")]
    np.testing.assert_allclose(vectors, done.vectors[rows], atol=1e-4)
    assert clf.embed(images[0]).shape == (done.vectors.shape[1],)


def test_a_folder_without_labels_is_embedded_by_file(tiny_run, tmp_path):
    _, run = tiny_run
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 40), (i * 80, 20, 200)).save(flat / f"{i}.png")
    done = imgcls.embed(flat, model=run)
    assert done.ids == ["0.png", "1.png", "2.png"] and done.table.labels == [None] * 3


def test_an_existing_output_is_kept_unless_overwrite(tiny_run, tmp_path):
    data, run = tiny_run
    (tmp_path / "e.parquet").write_bytes(b"precious")
    with pytest.raises(DataError, match="already exists"):
        imgcls.embed(data, tmp_path / "e.parquet", model=run)
    assert (tmp_path / "e.parquet").read_bytes() == b"precious"
    with pytest.raises(ConfigError, match="unknown `engine` 'spark'; choose one of local, ray"):
        imgcls.embed(data, tmp_path / "new.parquet", model=run, engine="spark")
    assert not (tmp_path / "new.parquet").exists()


def test_a_killed_run_resumes_without_recomputing_finished_parts(tmp_path):
    data = write_class_folders(tmp_path / "data", per_class=150)
    run = tmp_path / "run"
    imgcls.train(data, run, config=TINY, use_cache=False)
    out = tmp_path / "e.parquet"
    command = [sys.executable, "-m", "imgcls", "embed", str(data), "--model", str(run), "-o", str(out),
               "--no-cache", "--chunk-rows", "16", "--json"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    parts = tmp_path / "e.parquet.parts"
    deadline = time.monotonic() + 120
    while len(list(parts.glob("part-*.npz"))) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists(), "the first run finished before it could be killed"
    finished = len(list(parts.glob("part-*.npz")))
    resumed = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    assert resumed["resumed"] == 16 * finished and resumed["computed"] == 450 - 16 * finished
    assert resumed["rows"] == 450 and not parts.exists()
    fresh = imgcls.embed(data, model=run, use_cache=False)
    np.testing.assert_allclose(read_embeddings(out).vectors, fresh.vectors, atol=1e-5)


SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "horse", "moon",
                  "page", "text", "clock", "hubble_deep_field", "immunohistochemistry", "logo")  # fmt: skip


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos") / "photos"
    folder.mkdir()
    for name in SKIMAGE_PHOTOS:
        pixels = getattr(skimage.data, name)()
        Image.fromarray(pixels).convert("RGB").save(folder / f"{name}.png")
    chelsea = Image.open(folder / "chelsea.png")
    chelsea.resize((chelsea.width // 3, chelsea.height // 3)).save(folder / "chelsea_small.jpg", quality=90)
    return folder


def test_similar_finds_an_images_resized_copy_and_never_the_query_itself(photos, tmp_path):
    imgcls.embed(photos, tmp_path / "photos.parquet", model="efficientnet_lite0")
    html = tmp_path / "near.html"
    out = run_cli("similar", str(tmp_path / "photos.parquet"), str(photos / "chelsea.png"), "coffee.png",
                  "-k", "3", "--json", "--html", str(html)).stdout  # fmt: skip
    by_file, by_id = json.loads(out)
    # A query from the table (by its file or its record id) is not its own neighbour.
    assert by_file["neighbours"][0]["id"] == "chelsea_small.jpg" and len(by_file["neighbours"]) == 3
    assert "chelsea.png" not in {n["id"] for n in by_file["neighbours"]}
    assert "coffee.png" not in {n["id"] for n in by_id["neighbours"]} and len(by_id["neighbours"]) == 3
    page = html.read_text()
    assert page.count("data:image/jpeg;base64,") == 8  # each query and its three neighbours


def test_similar_names_a_query_it_cannot_resolve(tiny_run, tmp_path):
    data, run = tiny_run
    imgcls.embed(data, tmp_path / "e.parquet", model=run)
    with pytest.raises(DataError, match="no-such-id"):
        imgcls.similar(tmp_path / "e.parquet", ["no-such-id"])


def test_faiss_and_numpy_find_the_same_neighbours():
    pytest.importorskip("faiss", reason="faiss is installed by make test (the search extra)")
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5000, 32)).astype(np.float32)
    queries = vectors[:20] + rng.normal(scale=0.1, size=(20, 32)).astype(np.float32)
    sims_np, rows_np = nearest(queries, vectors, k=5, engine="numpy")
    sims_faiss, rows_faiss = nearest(queries, vectors, k=5, engine="faiss")
    # Other BLAS kernels: 32-term dot products of unit vectors differ by < 32 * 6e-8 = 2e-6,
    # and the closest two of these top-6 similarities lie 6.2e-5 apart, so the order holds.
    np.testing.assert_array_equal(rows_np, rows_faiss)
    np.testing.assert_allclose(sims_np, sims_faiss, atol=1e-5)
    assert (rows_np[:, 0] == np.arange(20)).all()
