"""``imgcls serve``: a FastAPI app that classifies uploaded images, plus a web page.

Concurrent requests are batched together (dynamic micro-batching): images wait at most
``max_wait_ms`` for others to share one forward pass of up to ``max_batch`` images. Uploads
are checked for size, count and decodability before they reach the model; a bad upload gets a
4xx with a message and never takes the server down. Ready for a network: a request body is
counted while it streams (a chunked upload with no Content-Length included) and refused once
over the limit; each image is shrunk to the network's resize size as soon as it is decoded;
requests in flight are capped (503 with Retry-After) and timed out; an API key, if set, is
required of every request but the page and the health check; CORS is off unless origins are
named. Imports no torch itself: with the ONNX runtime the whole server runs without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Annotated, Any, Protocol

import numpy as np
from fastapi import Depends, FastAPI, File, Header, HTTPException, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool

from imgcls.config import ServeLimits
from imgcls.data._pixels import resize_for
from imgcls.data.images import UnreadableImageError, decode_rgb
from imgcls.data.preprocessing import Preprocessing
from imgcls.inference.predictions import rank_classes

log = logging.getLogger(__name__)


class ImagePredictor(Protocol):
    classes: list[str]
    backbone: str
    config: dict[str, Any]
    preprocessing: Preprocessing

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray: ...


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
    rest of the body is never read; whatever the application makes of the cut-off body is
    replaced by the 413."""

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
        response = JSONResponse({"detail": f"request body over {self.max_bytes} bytes"}, 413)
        await response({"type": "http"}, _no_body, send)


async def _no_body() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}


def create_app(
    predictor: ImagePredictor,
    *,
    runtime: str,
    limits: ServeLimits | None = None,
    api_key: str | None = None,
    cors_origins: Sequence[str] = (),
) -> FastAPI:
    """The FastAPI application serving ``predictor``; with ``api_key``, requests other than the
    page and ``/health`` must send it (``X-API-Key`` or ``Authorization: Bearer``)."""
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
    # Room for the multipart framing around the largest allowed set of files.
    app.add_middleware(_BodyLimit, max_bytes=limits.max_upload_bytes * limits.max_files + 65536)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"])
    authorised = [Depends(_key_check(api_key))] if api_key else []

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "runtime": runtime,
            "batches_run": batcher.batches_run,
            "largest_batch": batcher.largest_batch,
        }

    @app.get("/model", dependencies=authorised)
    async def model_info() -> dict[str, Any]:
        return {
            "backbone": predictor.backbone,
            "classes": predictor.classes,
            "runtime": runtime,
            "metrics": predictor.config.get("metrics", {}),
            "preprocessing": predictor.preprocessing.to_dict(),
        }

    @app.post("/predict", dependencies=authorised)
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


def _key_check(api_key: str) -> Callable[..., None]:
    """A dependency that refuses a request without ``api_key`` (compared in constant time)."""
    expected = api_key.encode()

    def check(
        x_api_key: Annotated[str | None, Header()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> None:
        given = x_api_key or (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), expected):
            raise HTTPException(401, "this server needs its API key (X-API-Key or Authorization: Bearer)")

    return check


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
    predictor: ImagePredictor,
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
    # Idle connections close after 5 s, and a request's headers may not exceed 16 KB.
    uvicorn.run(
        app, host=host, port=port, log_level="info", timeout_keep_alive=5, h11_max_incomplete_event_size=16384
    )
