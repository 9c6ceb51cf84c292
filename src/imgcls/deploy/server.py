"""``imgcls serve``: a FastAPI app that classifies uploaded images, plus a web page.

Concurrent requests are batched together (dynamic micro-batching): images wait at most
``max_wait_ms`` for others to share one forward pass of up to ``max_batch`` images. Uploads
are checked for size, count and decodability before they reach the model; a bad upload gets a
4xx with a message and never takes the server down. Imports no torch itself: with the ONNX
runtime the whole server runs without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Annotated, Any, Protocol

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool

from imgcls.config import ServeLimits
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


def create_app(predictor: ImagePredictor, *, runtime: str, limits: ServeLimits | None = None) -> FastAPI:
    """The FastAPI application serving ``predictor``."""
    limits = limits or ServeLimits()
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

    @app.middleware("http")
    async def reject_huge_bodies(request: Request, call_next: Callable) -> Any:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limits.max_upload_bytes * limits.max_files + 65536:
            return JSONResponse(
                {"detail": f"request body over {limits.max_upload_bytes * limits.max_files} bytes"}, 413
            )
        return await call_next(request)

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
        min_side = predictor.preprocessing.resize_size  # the same reduced JPEG decode as the CLI
        images = [await _decode_upload(upload, limits, min_side) for upload in file]
        probs = await batcher.submit(images)
        names = [upload.filename for upload in file]
        ranked = rank_classes(np.stack(probs), predictor.classes, names, limits.top_k)
        return [prediction.to_dict() for prediction in ranked]

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return resources.files("imgcls.deploy").joinpath("static/index.html").read_text(encoding="utf-8")

    return app


async def _decode_upload(upload: UploadFile, limits: ServeLimits, min_side: int) -> Image.Image:
    """Read at most the size limit, then decode off the event loop; 413/415 with a reason."""
    data = await upload.read(limits.max_upload_bytes + 1)
    if len(data) > limits.max_upload_bytes:
        raise HTTPException(
            413, f"{upload.filename}: larger than the {limits.max_upload_bytes}-byte upload limit"
        )
    try:
        return await run_in_threadpool(decode_rgb, data, name=upload.filename or "upload", min_side=min_side)
    except UnreadableImageError as exc:
        status = 413 if "decompression bomb" in exc.reason or "strip" in exc.reason else 415
        raise HTTPException(status, f"{upload.filename}: {exc.reason}") from exc


def serve(
    predictor: ImagePredictor, *, runtime: str, host: str, port: int, limits: ServeLimits | None = None
) -> None:
    import uvicorn

    uvicorn.run(create_app(predictor, runtime=runtime, limits=limits), host=host, port=port, log_level="info")
