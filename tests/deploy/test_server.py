"""``imgcls serve``: real uploads, bad uploads, 50 concurrent requests, the server survives."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import skimage.data
from PIL import Image

import imgcls
from imgcls.config import TrainConfig
from imgcls.deploy.export import export_model
from tests.server_helpers import running_server


def _png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from tests.conftest import write_class_folders

    root = tmp_path_factory.mktemp("serve")
    data = write_class_folders(root / "data")
    imgcls.train(
        data, root / "run", config=TrainConfig(backbone="test_efficientnet", pretrained=False, input_size=64)
    )
    return root / "run"


def test_predict_bad_uploads_and_concurrency(model):
    cat = _png(skimage.data.chelsea())  # about 240 kB
    small = _png(skimage.data.chelsea()[::4, ::4])
    with running_server(model, "--runtime", "torch", "--max-upload-mb", "0.1", "--max-files", "4") as url:
        ok = httpx.post(f"{url}/predict", files=[("file", ("small.png", small, "image/png"))], timeout=30)
        assert ok.status_code == 200
        body = ok.json()
        assert body[0]["path"] == "small.png" and len(body[0]["predictions"]) == 3
        assert set(body[0]["predictions"][0]) == {"label", "index", "probability"}

        two = httpx.post(
            f"{url}/predict", files=[("file", ("a.png", small)), ("file", ("b.png", small))], timeout=30
        )
        assert [r["path"] for r in two.json()] == ["a.png", "b.png"]

        text = httpx.post(
            f"{url}/predict", files=[("file", ("notes.txt", b"hello", "text/plain"))], timeout=30
        )
        assert text.status_code == 415 and "not an image" in text.json()["detail"]
        big = httpx.post(f"{url}/predict", files=[("file", ("cat.png", cat, "image/png"))], timeout=30)
        assert big.status_code == 413
        many = httpx.post(
            f"{url}/predict", files=[("file", (f"{i}.png", small)) for i in range(5)], timeout=30
        )
        assert many.status_code == 413
        empty = httpx.post(f"{url}/predict", timeout=30)
        assert empty.status_code == 422

        def one(i: int) -> int:
            return httpx.post(f"{url}/predict", files=[("file", (f"{i}.png", small))], timeout=60).status_code

        with ThreadPoolExecutor(50) as pool:
            codes = list(pool.map(one, range(50)))
        assert codes == [200] * 50
        health = httpx.get(f"{url}/health").json()
        assert health["status"] == "ok"
        assert health["largest_batch"] > 1  # concurrent requests shared forward passes
        info = httpx.get(f"{url}/model").json()
        assert info["classes"] == ["blue", "green", "red"] and info["runtime"] == "torch"
        assert "/predict" in httpx.get(f"{url}/openapi.json").json()["paths"]


def test_onnx_runtime_server(model):
    export_model(model, format="onnx")
    small = _png(skimage.data.chelsea()[::4, ::4])
    with running_server(model, "--runtime", "onnx") as url:
        response = httpx.post(f"{url}/predict", files=[("file", ("cat.png", small))], timeout=30)
        assert response.status_code == 200
        assert httpx.get(f"{url}/model").json()["runtime"] == "onnx"
