"""``imgcls serve``: real uploads, bad uploads, 50 concurrent requests, the server survives."""

from __future__ import annotations

import contextlib
import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import skimage.data
from PIL import Image

import imgcls
from imgcls.config import TrainConfig
from imgcls.deploy.export import export_model
from tests.conftest import across_kernels
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

        mixed = httpx.post(
            f"{url}/predict",
            files=[("file", ("a.png", small)), ("file", ("notes.txt", b"hello")), ("file", ("c.png", small))],
            timeout=30,
        )
        assert mixed.status_code == 200  # one bad file does not cost the others their predictions
        a, bad, c = mixed.json()
        # A batch of two against one alone: kernels may differ (fp32 ~1e-7 on a probability);
        # another image's scores differ by > 1e-2.
        tolerance = across_kernels(imgcls.load(model).config["precision"], 1e-5)
        for answer in (a, c):
            assert [p["label"] for p in answer["predictions"]] == [p["label"] for p in body[0]["predictions"]]
            assert answer["predictions"][0]["probability"] == pytest.approx(
                body[0]["predictions"][0]["probability"], abs=tolerance
            )
        assert bad["path"] == "notes.txt" and bad["status"] == 415 and "not an image" in bad["error"]

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


def _strip_png(width: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, 1)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _chunked_upload(url: str, *, megabytes: int) -> tuple[bytes, int]:
    """Stream a multipart upload of ``megabytes`` in 1 MB chunks without a Content-Length;
    stop when the server answers. Returns the answer's start and the chunks sent."""
    import socket
    from urllib.parse import urlparse

    address = urlparse(url)
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nX-API-Key: s3cret\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
    )
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
    chunk = b"x" * 2**20
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(head + b"%x\r\n%s\r\n" % (len(part), part))
        for sent in range(megabytes):
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:  # the server answered and closed the connection: it stopped reading
                break
            sock.settimeout(0.001)
            with contextlib.suppress(TimeoutError, BlockingIOError):
                answer = sock.recv(4096)
                if answer:
                    return answer, sent + 1
            sock.settimeout(30)
        sock.settimeout(30)
        return sock.recv(4096), sent + 1


def test_a_server_on_a_network_needs_its_key_and_refuses_oversized_and_hostile_bodies(model):
    import time

    image = _png(skimage.data.chelsea()[::8, ::8])
    with running_server(model, "--api-key", "s3cret", "--max-upload-mb", "1") as url:
        assert httpx.get(f"{url}/health").status_code == 200  # open: monitors need no key
        files = {"file": ("cat.png", image, "image/png")}
        assert httpx.post(f"{url}/predict", files=files).status_code == 401
        assert httpx.post(f"{url}/predict", files=files, headers={"X-API-Key": "wrong"}).status_code == 401
        good = httpx.post(f"{url}/predict", files=files, headers={"Authorization": "Bearer s3cret"})
        assert good.status_code == 200 and good.json()[0]["path"] == "cat.png"
        assert "access-control-allow-origin" not in good.headers  # CORS is off unless asked for
        started = time.perf_counter()
        strip = httpx.post(
            f"{url}/predict",
            files={"file": ("strip.png", _strip_png(1_000_000))},
            headers={"X-API-Key": "s3cret"},
        )
        assert strip.status_code == 413 and "strip" in strip.json()["detail"]
        assert time.perf_counter() - started < 5
        # A chunked body (no Content-Length) of up to 300 MB: refused before it is read in full.
        answer, sent = _chunked_upload(url, megabytes=300)
        assert answer.startswith(b"HTTP/1.1 413") and sent < 30, (answer[:80], sent)


def test_requests_beyond_the_concurrency_limit_get_503_with_retry_after_and_slow_ones_time_out():
    import threading
    import time

    import numpy as np
    from fastapi.testclient import TestClient

    from imgcls.config import ServeLimits
    from imgcls.data.preprocessing import Preprocessing
    from imgcls.deploy.server import create_app

    release = threading.Event()

    class SlowPredictor:
        def __init__(self) -> None:
            self.classes, self.backbone, self.config = ["a", "b"], "slow", {}
            self.preprocessing = Preprocessing(32, 1.0, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

        def probabilities(self, images):
            release.wait(10)
            return np.full((len(images), 2), 0.5, dtype=np.float32)

    limits = ServeLimits(max_concurrent=1, request_timeout_s=2.0)
    files = {"file": ("x.png", _png(np.zeros((40, 40, 3), dtype=np.uint8)), "image/png")}
    with TestClient(create_app(SlowPredictor(), runtime="test", limits=limits)) as client:
        first = []
        worker = threading.Thread(target=lambda: first.append(client.post("/predict", files=files)))
        worker.start()
        time.sleep(0.5)  # the first request is now waiting for the model
        busy = client.post("/predict", files=files)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        worker.join(10)
        assert first[0].status_code == 503 and "took over 2 s" in first[0].json()["detail"]
        release.set()
        assert client.post("/predict", files=files).status_code == 200
