"""``imgcls serve``: a FastAPI app that classifies uploaded images, plus a web page.

Concurrent requests are batched together (dynamic micro-batching): images wait at most
``max_wait_ms`` for others to share one forward pass of up to ``max_batch`` images. Uploads
are checked for size, count and decodability before they reach the model; a bad upload gets a
4xx with a message and never takes the server down. Ready for a network: a request body is
counted while it streams (a chunked upload with no Content-Length included) and refused once
over the limit; each image is shrunk to the network's resize size as soon as it is decoded;
requests in flight are capped (503 with Retry-After) and timed out; request headers are
capped (431); an API key, if set, is required of every request but the page and the health
check, and checked from the headers before a byte of the body is read; keys never reach the
access log; CORS is off unless origins are named. Imports no torch itself: with the ONNX
runtime the whole server runs without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Annotated, Any
from urllib.parse import quote, quote_plus

import numpy as np
from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool

from imgcls.config import ServeLimits
from imgcls.data._pixels import resize_for
from imgcls.data.images import UnreadableImageError, decode_rgb
from imgcls.data.preprocessing import Preprocessing
from imgcls.inference.predictions import Predictor, rank_classes

log = logging.getLogger(__name__)

# The request line and headers of one request together, ample for browsers and HTTP clients;
# more is answered 431 (a header block that arrives whole) or refused by the HTTP parser (one
# still incomplete past this size), so a client cannot make the server hold large headers.
MAX_HEADER_BYTES = 16 * 1024
# What a GET or HEAD may fetch without the API key: the page, which asks for the key, and the
# health check, for monitors and load balancers. Everything else needs it, /docs and
# /openapi.json included, and so does any route added later.
OPEN_PATHS = frozenset({"/", "/health"})


class MicroBatcher:
    """Collects images from concurrent requests into batches for one predict call each."""

    def __init__(
        self, predict: Callable[[list[Image.Image]], np.ndarray], *, max_batch: int, max_wait_s: float
    ) -> None:
        self.predict, self.max_batch, self.max_wait_s = predict, max_batch, max_wait_s
        self.queue: asyncio.Queue[tuple[Image.Image, asyncio.Future]] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="imgcls-model")
        self.batches_run = 0
        self.largest_batch = 0

    async def submit(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in images]
        for image, future in zip(images, futures, strict=True):
            self.queue.put_nowait((image, future))
        return list(await asyncio.gather(*futures))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch and (remaining := deadline - loop.time()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
            await self._run_batch(loop, batch)

    async def _run_batch(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[Image.Image, asyncio.Future]]
    ) -> None:
        self.batches_run += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        try:
            probs = await loop.run_in_executor(self.executor, self.predict, [image for image, _ in batch])
        except Exception as exc:  # the model failed: fail these requests, keep serving
            log.exception("prediction failed for a batch of %d", len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), row in zip(batch, probs, strict=True):
            if not future.done():
                future.set_result(row)


class _BodyLimit:
    """ASGI middleware: count a request's body while it arrives and answer 413 once it passes
    ``max_bytes``, whether or not a Content-Length was sent (chunked uploads have none). The
    413 closes the connection, so the rest of the body is never read; whatever the application
    makes of the cut-off body is replaced by the 413."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send)
            return
        await self._guarded(scope, receive, send)

    async def _guarded(self, scope: dict, receive: Callable, send: Callable) -> None:
        received, too_large = 0, False

        async def counting_receive() -> dict:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                too_large = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: dict) -> None:
            if not too_large:
                await send(message)
            elif message["type"] == "http.response.start":
                await self._refuse(send)

        await self.app(scope, counting_receive, guarded_send)

    async def _refuse(self, send: Callable) -> None:
        await _answer(send, 413, f"request body over {self.max_bytes} bytes")


class _HeaderLimit:
    """ASGI middleware: answer 431 to a request whose request line and headers pass
    ``max_bytes``. The HTTP parser refuses a header block only while it is still incomplete
    past its limit; a block that arrives whole is parsed at any size, hence this check."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and _header_bytes(scope) > self.max_bytes:
            await _answer(send, 431, f"request line and headers over {self.max_bytes} bytes")
            return
        await self.app(scope, receive, send)


def _header_bytes(scope: dict) -> int:
    """The size of the request line and headers as a client writes them:
    ``METHOD target HTTP/1.1``, each ``name: value``, and the line ends."""
    query = scope.get("query_string") or b""
    target = len(scope.get("raw_path") or scope["path"].encode()) + (len(query) + 1 if query else 0)
    line = len(scope["method"]) + target + len(scope["http_version"]) + len(" HTTP/ \r\n")
    return line + sum(len(name) + len(value) + len(": \r\n") for name, value in scope["headers"]) + 2


class _KeyCheck:
    """ASGI middleware: refuse (401) a request without the API key on its headers alone, so
    the body of an unauthenticated upload is never read: the 401 goes out at once and closes
    the connection. The key comes as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY`` and is
    compared in constant time; only GET and HEAD of ``OPEN_PATHS`` go without it."""

    def __init__(self, app: Any, api_key: str) -> None:
        self.app, self.expected = app, api_key.encode()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or _is_open(scope) or self._authorised(scope["headers"]):
            await self.app(scope, receive, send)
            return
        detail = "this server needs its API key (X-API-Key: KEY or Authorization: Bearer KEY)"
        await _answer(send, 401, detail, {"WWW-Authenticate": "Bearer"})

    def _authorised(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        matches = [hmac.compare_digest(given, self.expected) for given in _presented_keys(headers)]
        return any(matches)


def _is_open(scope: dict) -> bool:
    return scope["method"] in ("GET", "HEAD") and scope["path"] in OPEN_PATHS


def _presented_keys(headers: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
    """The keys a request offers: each ``X-API-Key`` value and each ``Authorization`` value
    of the Bearer scheme (a bare ``Authorization: KEY`` offers none)."""
    keys = []
    for name, value in headers:
        if name == b"x-api-key":
            keys.append(value.strip())
        elif name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                keys.append(token.strip())
    return keys


async def _answer(send: Callable, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """A refusal sent before the request's body is read; it closes the connection, so the
    server reads no more of that body."""
    response = JSONResponse({"detail": detail}, status, headers={**(headers or {}), "Connection": "close"})
    await response({"type": "http"}, _no_body, send)


async def _no_body() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}


class _RedactKeys(logging.Filter):
    """Keeps API keys out of the access log: the value of any query parameter named like a key
    or token (``?key=``, ``api_key=``, ``access_token=``) and the server's own key wherever it
    appears in the logged request, since a mistaken client may put it anywhere in a URL."""

    _PARAM = re.compile(r"([?&;][^=&;\s]*(?:key|token)=)[^&;\s\"]*", re.IGNORECASE)

    def __init__(self, api_key: str | None) -> None:
        super().__init__()
        # As sent, and percent-encoded as a client may have put it into the URL.
        self.secrets = {api_key, quote(api_key, safe=""), quote_plus(api_key)} if api_key else set()

    def redact(self, text: str) -> str:
        text = self._PARAM.sub(r"\1***", text)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def create_app(
    predictor: Predictor,
    *,
    runtime: str,
    limits: ServeLimits | None = None,
    api_key: str | None = None,
    cors_origins: Sequence[str] = (),
) -> FastAPI:
    """The FastAPI application serving ``predictor``; with ``api_key``, requests other than a
    GET of the page or ``/health`` must send it (``X-API-Key`` or ``Authorization: Bearer``)."""
    limits = limits or ServeLimits()
    in_flight = asyncio.Semaphore(limits.max_concurrent)
    batcher = MicroBatcher(
        lambda images: predictor.probabilities(images),
        max_batch=limits.max_batch,
        max_wait_s=limits.max_wait_ms / 1000,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        batcher.executor.shutdown(wait=False)

    app = FastAPI(title="imgcls", description=f"{predictor.backbone} image classifier", lifespan=lifespan)
    app.state.batcher = batcher
    _add_middleware(app, limits, api_key, cors_origins)
    app.add_exception_handler(RequestValidationError, _form_error)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "runtime": runtime,
            "batches_run": batcher.batches_run,
            "largest_batch": batcher.largest_batch,
        }

    @app.get("/model")
    async def model_info() -> dict[str, Any]:
        return {
            "backbone": predictor.backbone,
            "classes": predictor.classes,
            "runtime": runtime,
            "metrics": predictor.config.get("metrics", {}),
            "preprocessing": predictor.preprocessing.to_dict(),
        }

    @app.post("/predict")
    async def predict(
        file: Annotated[list[UploadFile], File(description="one or more images (repeat the field)")],
    ) -> list[dict[str, Any]]:
        if len(file) > limits.max_files:
            raise HTTPException(413, f"{len(file)} files in one request; the limit is {limits.max_files}")
        if in_flight.locked():
            raise HTTPException(
                503,
                f"{limits.max_concurrent} requests are in flight; try again",
                headers={"Retry-After": "1"},
            )
        async with in_flight:
            try:
                return await asyncio.wait_for(_predict(file), limits.request_timeout_s)
            except TimeoutError:
                raise HTTPException(
                    503, f"the request took over {limits.request_timeout_s:g} s", headers={"Retry-After": "5"}
                ) from None

    async def _predict(uploads: list[UploadFile]) -> list[dict[str, Any]]:
        """One answer per file: its predictions, or its own error beside the others'
        predictions; a request whose every file is refused gets the first refusal's status."""
        decoded: list[Image.Image | HTTPException] = []
        for upload in uploads:
            try:
                decoded.append(await _decode_upload(upload, limits, predictor.preprocessing))
            except HTTPException as refused:
                decoded.append(refused)
        images = [d for d in decoded if isinstance(d, Image.Image)]
        if not images:
            raise next(d for d in decoded if isinstance(d, HTTPException))
        names = [u.filename for u, d in zip(uploads, decoded, strict=True) if isinstance(d, Image.Image)]
        probs = np.stack(await batcher.submit(images))
        ranked = iter(rank_classes(probs, predictor.classes, names, limits.top_k))
        return [
            next(ranked).to_dict()
            if isinstance(item, Image.Image)
            else {"path": upload.filename, "error": item.detail, "status": item.status_code}
            for upload, item in zip(uploads, decoded, strict=True)
        ]

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return resources.files("imgcls.deploy").joinpath("static/index.html").read_text(encoding="utf-8")

    return app


async def _form_error(request: Any, exc: Exception) -> JSONResponse:
    """A request whose form lacks what an endpoint takes: one sentence that says what to send,
    not the validator's list of locations."""
    missing = sorted({str(error["loc"][-1]) for error in getattr(exc, "errors", list)() if error.get("loc")})
    detail = (
        f"send each image as a multipart/form-data field named 'file' (repeat it for several); "
        f"this request lacks {', '.join(repr(m) for m in missing) or 'it'}"
    )
    return JSONResponse({"detail": detail}, 422)


def _add_middleware(app: FastAPI, limits: ServeLimits, api_key: str | None, cors: Sequence[str]) -> None:
    """From the outside in: the header limit, CORS (so that preflights need no key and a 401
    still reaches a cross-origin page), the API key, then the body limit."""
    # Room for the multipart framing around the largest allowed set of files.
    app.add_middleware(_BodyLimit, max_bytes=limits.max_upload_bytes * limits.max_files + 65536)
    if api_key:
        app.add_middleware(_KeyCheck, api_key=api_key)
    if cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors),
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Authorization"],
        )
    app.add_middleware(_HeaderLimit, max_bytes=MAX_HEADER_BYTES)


async def _decode_upload(upload: UploadFile, limits: ServeLimits, pre: Preprocessing) -> Image.Image:
    """Read at most the size limit, then decode and shrink to the network's resize size off the
    event loop (a full-size image never waits for its batch); 413/415 with a reason."""
    data = await upload.read(limits.max_upload_bytes + 1)
    if len(data) > limits.max_upload_bytes:
        raise HTTPException(
            413, f"{upload.filename}: larger than the {limits.max_upload_bytes}-byte upload limit"
        )
    name = upload.filename or "upload"
    try:
        return await run_in_threadpool(
            lambda: resize_for(decode_rgb(data, name=name, min_side=pre.resize_size), pre)
        )
    except UnreadableImageError as exc:
        status = 413 if "decompression bomb" in exc.reason or "strip" in exc.reason else 415
        raise HTTPException(status, f"{upload.filename}: {exc.reason}") from exc


def serve(
    predictor: Predictor,
    *,
    runtime: str,
    host: str,
    port: int,
    limits: ServeLimits | None = None,
    api_key: str | None = None,
    cors_origins: Sequence[str] = (),
) -> None:
    import uvicorn

    app = create_app(predictor, runtime=runtime, limits=limits, api_key=api_key, cors_origins=cors_origins)
    # Idle connections close after 5 s. h11 is named, not left to whichever parser is installed,
    # because the limit on a header block still arriving is an h11 setting; _HeaderLimit refuses
    # a complete one over the same size.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        timeout_keep_alive=5,
        http="h11",
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )
    # After Config, which sets up uvicorn's loggers.
    logging.getLogger("uvicorn.access").addFilter(_RedactKeys(api_key))
    uvicorn.Server(config).run()
