"""``imgcls serve``: real uploads, bad uploads, 50 concurrent requests, the server survives."""

from __future__ import annotations

import contextlib
import io
import select
import socket
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

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
        wrong_field = httpx.post(f"{url}/predict", files=[("image", ("a.png", small))], timeout=30)
        assert wrong_field.status_code == 422
        assert wrong_field.json() == {
            "detail": "send each image as a multipart/form-data field named 'file' (repeat it for "
            "several); this request lacks 'file'"
        }

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
    stop when the server answers. Returns the answer and the chunks sent."""
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nX-API-Key: s3cret\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
    )
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
    chunk = b"%x\r\n%s\r\n" % (2**20, b"x" * 2**20)
    head += b"%x\r\n%s\r\n" % (len(part), part)
    answer, sent, _ = _send_until_answered(url, head, [chunk] * megabytes)
    return answer, sent


def _send_until_answered(url: str, head: bytes, pieces: Sequence[bytes]) -> tuple[bytes, int, bool]:
    """Send ``head``, then ``pieces`` one by one for as long as no answer has come. Returns
    the answer, the pieces sent before it came, and whether the server closed the connection."""
    address = urlparse(url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(head)
        sent = 0
        while sent < len(pieces) and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(pieces[sent])
            except OSError:  # the server answered and closed the connection: it stopped reading
                break
            sent += 1
        answer, closed = _read_until_closed(sock)
    return answer, sent, closed


def _read_until_closed(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, bool]:
    """What the server sends, and whether it closed the connection within ``timeout``."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:  # closed with the rest of the upload unread
        return received, True
    except TimeoutError:
        return received, False
    return received, True


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


KEY = "s3cret"


@pytest.fixture(scope="module")
def keyed(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A server with an API key and the default limits (160 MB a request), and its log."""
    log = tmp_path_factory.mktemp("keyed") / "server.log"
    with running_server(model, "--runtime", "torch", "--api-key", KEY, log=log) as url:
        yield url, log


def _multipart_upload(megabytes: int, *headers: bytes) -> tuple[bytes, list[bytes]]:
    """The head and body pieces (1 MB each) of a well-formed upload of one ``megabytes`` file."""
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
    pieces = [part, *[b"x" * 2**20] * megabytes, b"\r\n--b--\r\n"]
    head = b"\r\n".join(
        [
            b"POST /predict HTTP/1.1",
            b"Host: x",
            b"Content-Type: multipart/form-data; boundary=b",
            b"Content-Length: %d" % sum(map(len, pieces)),
            *headers,
            b"",
            b"",
        ]
    )
    return head, pieces


def test_without_its_key_a_large_upload_is_refused_before_its_body_is_read(keyed):
    url, _ = keyed
    head, pieces = _multipart_upload(50)
    answer, sent, closed = _send_until_answered(url, head, pieces)
    assert answer.startswith(b"HTTP/1.1 401") and b"connection: close" in answer.lower(), answer[:200]
    # The 401 came from the headers: a check after the body parse would answer only once all 52
    # pieces were in. What was sent meanwhile is what the kernel's socket buffers took, unread.
    assert sent < 25, sent
    assert closed  # the server read no more of the upload
    # The same upload with the key is read to its end before it is answered (the file is over
    # the 10 MB limit): so the measure above tells a read body from an unread one.
    head, pieces = _multipart_upload(50, f"X-API-Key: {KEY}".encode(), b"Connection: close")
    answer, sent, _ = _send_until_answered(url, head, pieces)
    assert answer.startswith(b"HTTP/1.1 413") and sent == len(pieces), (answer[:200], sent)


def test_with_a_key_only_a_get_of_the_page_or_health_goes_without_it(keyed):
    url, _ = keyed
    assert httpx.get(f"{url}/").status_code == 200  # the page, which asks for the key
    assert httpx.get(f"{url}/health").status_code == 200
    for path in ("/docs", "/openapi.json", "/redoc", "/docs/oauth2-redirect", "/model", "/no-such-path"):
        refused = httpx.get(f"{url}{path}")
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"] == "Bearer" and refused.headers["connection"] == "close"
    assert httpx.post(f"{url}/", content=b"x").status_code == 401
    assert httpx.post(f"{url}/health", content=b"x").status_code == 401
    with_key = {"X-API-Key": KEY}
    assert httpx.get(f"{url}/docs", headers=with_key).status_code == 200
    assert "/predict" in httpx.get(f"{url}/openapi.json", headers=with_key).json()["paths"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"X-API-Key": KEY}, 200),
        ({"Authorization": f"Bearer {KEY}"}, 200),
        ({"Authorization": f"bearer {KEY}"}, 200),  # the scheme's name is case-insensitive
        ({"Authorization": KEY}, 401),  # a bare key is no Bearer credential
        ({"Authorization": f"Basic {KEY}"}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"X-API-Key": "wrong"}, 401),
        ({"X-API-Key": f"{KEY}x"}, 401),
        ({"X-API-Key": ""}, 401),
        ({}, 401),
    ],
)
def test_the_key_is_taken_from_x_api_key_or_a_bearer_authorization_only(keyed, headers, status):
    url, _ = keyed
    assert httpx.get(f"{url}/model", headers=headers).status_code == status


def _exchange(url: str, head: bytes) -> bytes:
    """Send ``head`` as it is (the server may close the connection before it is all in) and
    return the answer."""
    address = urlparse(url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        with contextlib.suppress(OSError):  # answered and closed before all of it was in
            sock.sendall(head)
        return _read_until_closed(sock, timeout=10)[0]


def _request_of(size: int, path: str = "/health", *headers: str) -> bytes:
    """A GET whose request line and headers are exactly ``size`` bytes, padded in one header."""
    lines = [f"GET {path} HTTP/1.1", "Host: x", "Connection: close", *headers, "X-Padding: ", "", ""]
    head = "\r\n".join(lines).encode()
    return head.replace(b"X-Padding: ", b"X-Padding: " + b"p" * (size - len(head)))


def test_request_headers_over_the_documented_limit_get_431(keyed):
    from imgcls.deploy.server import MAX_HEADER_BYTES

    url, _ = keyed
    assert MAX_HEADER_BYTES == 16 * 1024  # what docs/deployment.md states
    assert len(_request_of(MAX_HEADER_BYTES)) == MAX_HEADER_BYTES
    assert _exchange(url, _request_of(MAX_HEADER_BYTES)).startswith(b"HTTP/1.1 200")
    with_key = _request_of(MAX_HEADER_BYTES, "/model", f"X-API-Key: {KEY}")
    assert _exchange(url, with_key).startswith(b"HTTP/1.1 200")
    over = _exchange(url, _request_of(MAX_HEADER_BYTES + 1))
    assert over.startswith(b"HTTP/1.1 431") and b"connection: close" in over.lower(), over[:200]
    assert _exchange(url, _request_of(MAX_HEADER_BYTES + 1, "/model")).startswith(b"HTTP/1.1 431")
    # Far over: 431 when the block arrives whole, 400 from the HTTP parser when it is still
    # incomplete past the limit; never served.
    huge = _exchange(url, _request_of(100 * 1024))
    assert huge.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400")), huge[:200]


def test_the_access_log_never_holds_the_key(keyed):
    url, log = keyed
    with_key = {"X-API-Key": KEY}
    httpx.get(f"{url}/?key={KEY}")  # the page's old address
    httpx.get(f"{url}/model?api_key={KEY}&x=1", headers=with_key)
    httpx.get(f"{url}/model?access_token={KEY}", headers={"Authorization": f"Bearer {KEY}"})
    httpx.get(f"{url}/health?q={KEY}")
    httpx.get(f"{url}/{KEY}/model")
    httpx.get(f"{url}/model", headers={"Authorization": KEY})
    lines = log.read_text().splitlines()
    assert not [line for line in lines if KEY in line]
    access = [line for line in lines if '" 200' in line or '" 401' in line]
    for request in ("GET /?key=***", "GET /model?api_key=***&x=1", "GET /model?access_token=***"):
        assert any(f'"{request} HTTP/1.1" 200' in line for line in access), (request, access)
    assert any('"GET /health?q=*** HTTP/1.1" 200' in line for line in access)
    assert any('"GET /***/model HTTP/1.1" 401' in line for line in access)


def test_the_page_asks_for_the_key_and_sends_it_in_a_header_only(keyed, tmp_path):
    from tests.deploy.test_browser import _browser

    sync_api = pytest.importorskip("playwright.sync_api")
    url, log = keyed
    photo = tmp_path / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()[::4, ::4]).save(photo)
    with sync_api.sync_playwright() as playwright:
        browser = _browser(playwright)
        try:
            page = browser.new_page()
            requests = []
            page.on("request", lambda request: requests.append((request.url, request.headers)))
            page.goto(f"{url}/?key={KEY}")  # an old bookmark: the key is taken out of the address
            page.wait_for_selector("#key-form:not([hidden])")
            assert KEY not in page.url and "needs its API key" in page.inner_text("#status")
            page.fill("#key", "wrong")
            page.press("#key", "Enter")
            page.wait_for_selector("#status:has-text('That key was refused')")
            page.fill("#key", KEY)
            page.click("#key-form button")
            page.wait_for_selector("#classes:has-text('3 classes')")
            assert page.is_hidden("#key-form")
            page.set_input_files("#file", [str(photo)])
            page.wait_for_selector(".card .top .label", timeout=30_000)
            stored = page.evaluate("sessionStorage.getItem('imgcls-api-key')")
            page.reload()  # the tab keeps the key: no second prompt
            page.wait_for_selector("#classes:has-text('3 classes')")
            assert page.is_hidden("#key-form") and KEY not in page.url
        finally:
            browser.close()
    assert stored == KEY
    keyed_requests = [h for u, h in requests if u.endswith(("/model", "/predict")) and "x-api-key" in h]
    assert len(keyed_requests) >= 3 and KEY in {h["x-api-key"] for h in keyed_requests}
    assert not [u for u, _ in requests[1:] if KEY in u]  # after the bookmark, no URL holds the key
    assert KEY not in log.read_text()


def test_cross_origin_pages_may_send_the_key_headers_and_read_a_401():
    from fastapi.testclient import TestClient

    from imgcls.deploy.server import create_app

    origin = {"Origin": "https://app.example"}
    app = create_app(_StubPredictor(), runtime="test", api_key=KEY, cors_origins=[origin["Origin"]])
    with TestClient(app) as client:
        preflight = client.options(
            "/predict",
            headers={
                **origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-api-key",
            },
        )
        assert preflight.status_code == 200
        assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
        refused = client.get("/model", headers=origin)
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == origin["Origin"]
        assert client.get("/model", headers={**origin, "Authorization": f"Bearer {KEY}"}).status_code == 200


class _StubPredictor:
    def __init__(self) -> None:
        from imgcls.data.preprocessing import Preprocessing

        self.classes, self.backbone, self.config = ["a", "b"], "stub", {}
        self.preprocessing = Preprocessing(32, 1.0, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

    def probabilities(self, images):
        import numpy as np

        return np.full((len(images), 2), 0.5, dtype=np.float32)
