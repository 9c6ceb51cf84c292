"""Export a saved model to ONNX or TorchScript, then prove the export computes the same thing.

The export takes the preprocessed image batch (N x 3 x H x W, dynamic N) and returns logits;
class names, preprocessing and backbone travel in its metadata. After writing, the exported
model and the PyTorch model run on the same real images, both on the device asked for (an
export that cannot run there fails the check); the maximum absolute logit difference and the
top-1 agreement are reported, and an export that disagrees is deleted and reported as an error.

What "disagrees" means. The export runs other kernels than PyTorch (ONNX Runtime's, or the
traced graph's fusions), and oneDNN picks its kernels by CPU, so the same float32 network sums
in another order: each layer's rounding error is about float32's epsilon (1.2e-7) times the root
of the terms it sums, compounding over the layers, and it grows with the logits' size. Those
differences stay orders of magnitude below a thousandth of the logits' spread (largest minus
smallest logit of an image), while a real fault (a perturbed weight, another normalisation, a
dropped op) moves the logits by a sizeable share of it. So the default limit is
``EXPORT_RELATIVE_TOLERANCE`` times that spread (at least 1), an absolute ``tolerance`` replaces
it for users who want another, and a top-1 flip fails the check unless the image's two leading
logits lie within that noise of each other (a near tie that rounding may legitimately reorder).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imgcls._files import (
    ONNX_FILE,
    RUN_CONFIG_FILE,
    SPLITS_FILE,
    TORCHSCRIPT_FILE,
    read_run_config,
    weights_digest,
)
from imgcls.config import EXPORT_RELATIVE_TOLERANCE
from imgcls.data._pixels import to_input_array
from imgcls.data.images import ImageRef, MemoryImage, UnreadableImageError, load_rgb
from imgcls.data.records import VAL
from imgcls.data.sources import open_source
from imgcls.data.splits import read_manifest
from imgcls.errors import ConfigError, DataError, ImgclsError
from imgcls.inference.classifier import Classifier
from imgcls.inference.onnx_runtime import METADATA_KEY
from imgcls.system.devices import CPU, place, resolve_device

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
DEFAULT_NAMES = {"onnx": ONNX_FILE, "torchscript": TORCHSCRIPT_FILE}
MAX_CHECK_IMAGES = 16
OPSET = 17


class ExportError(ImgclsError):
    """The exported model does not reproduce the PyTorch model."""


@dataclass(frozen=True)
class ExportReport:
    path: Path
    format: str
    images: int
    max_abs_logit_diff: float
    top1_agreement: float
    device: str  # where the parity check ran
    allowed_logit_diff: float  # the limit the check applied (see the module docstring)
    logit_spread: float  # largest minus smallest logit, the most of any check image

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}


def export_model(
    model_dir: str | Path,
    *,
    format: str,
    output: str | Path | None = None,
    check_images: Sequence[str | ImageRef] = (),
    tolerance: float | None = None,
    device: str = "auto",
) -> ExportReport:
    """Export ``model_dir`` and run the parity check on ``device``; see the module docstring.

    ``tolerance``: the largest |logit difference| allowed, absolute; ``None`` scales it to the
    logits (``EXPORT_RELATIVE_TOLERANCE`` of their spread).
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    checked_on = _check_device(format, device)
    clf = Classifier.load(model_dir)
    model = clf.model.to(memory_format=torch.contiguous_format).eval()
    path = Path(output) if output else clf.directory / DEFAULT_NAMES[format]  # type: ignore[operator]
    metadata = json.dumps(_metadata(clf))
    size = clf.preprocessing.input_size
    example = torch.zeros(2, 3, size, size)
    batch = _check_batch(clf, check_images)
    # Written and checked under a temporary name: a failed export never replaces a good one.
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if format == "onnx":
            _export_onnx(model, example, tmp, metadata)
        else:
            _export_torchscript(model, example, tmp, metadata)
        report = _parity(model, format, tmp, batch, tolerance, checked_on)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    report = dataclasses.replace(report, path=path)
    log.info(
        "exported %s: max |logit diff| %.2e, top-1 agreement %.4f (on %s)",
        path,
        report.max_abs_logit_diff,
        report.top1_agreement,
        report.device,
    )
    return report


def _check_device(format: str, device: str) -> torch.device:
    """Where the parity check runs: ``device``, resolved. An ONNX export is checked by ONNX
    Runtime, on a CUDA GPU only where it has the CUDA provider (``auto`` then checks on the CPU)."""
    resolved = resolve_device(device)
    if format != "onnx" or resolved.type == "cpu" or _onnx_cuda(resolved):
        return resolved
    if device == "auto":
        log.info("ONNX Runtime here cannot run on %s: the parity check runs on the CPU", resolved)
        return CPU
    raise ConfigError(
        f"`device={device}`: ONNX Runtime here runs on the CPU only (a CUDA GPU needs "
        "onnxruntime-gpu); check the export with --device cpu, or export --format torchscript"
    )


def _onnx_cuda(device: torch.device) -> bool:
    import onnxruntime as ort

    return device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()


def _onnx_providers(device: torch.device) -> list[Any]:
    if device.type == "cuda":
        return [("CUDAExecutionProvider", {"device_id": device.index or 0})]
    return ["CPUExecutionProvider"]


def _metadata(clf: Classifier) -> dict[str, Any]:
    return {
        "format_version": 1,
        "classes": clf.classes,
        "preprocessing": clf.preprocessing.to_dict(),
        "backbone": {"name": clf.backbone, "timm_arch": clf.config["backbone"].get("timm_arch")},
        "metrics": clf.metrics,
        # ``--runtime auto`` uses the export only while the model's weights are still these.
        "weights_digest": weights_digest(clf.directory) if clf.directory is not None else None,
        "input": "float32 N x 3 x H x W, preprocessed",
        "output": "logits N x classes",
    }


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, metadata: str) -> None:
    import onnx

    with _quiet_tracing():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata
    onnx.save(proto, str(path))


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: Path, metadata: str) -> None:
    with torch.no_grad(), _quiet_tracing():
        traced = torch.jit.trace(model, example)
    torch.jit.save(traced, str(path), _extra_files={"imgcls.json": metadata})


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Tracing warns, quoting source lines, wherever a shape becomes a Python number (TF "same"
    padding computes its padding so). Those numbers are the same for every image of the fixed
    input size the export takes, and the parity check that follows runs the export on real
    images, so the warnings say nothing a user can act on. The legacy exporter's deprecation
    notice is silenced for the same reason: the export is checked, not trusted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _check_batch(clf: Classifier, check_images: Sequence[str | ImageRef]) -> np.ndarray:
    """Preprocessed real images: the given ones, else validation images of the training run."""
    paths = [p if isinstance(p, MemoryImage) else Path(p) for p in check_images] or _run_images(clf)
    arrays = []
    for path in paths[:MAX_CHECK_IMAGES]:
        try:
            arrays.append(
                to_input_array(load_rgb(path, min_side=clf.preprocessing.resize_size), clf.preprocessing)
            )
        except UnreadableImageError as exc:
            log.warning("parity check skips %s: %s", path, exc.reason)
    if not arrays:
        raise ConfigError(
            "no readable images for the parity check: pass `check_images=PATH...` (the training "
            "data named in the run's run_config.json was not found)"
        )
    return np.stack(arrays)


def _run_images(clf: Classifier) -> list[ImageRef]:
    """Images of the training run, validation first; none when the run's data is not there."""
    run_dir = clf.run_dir
    if run_dir is None or not (run_dir / RUN_CONFIG_FILE).is_file() or not (run_dir / SPLITS_FILE).is_file():
        return []
    saved = read_run_config(run_dir)
    settings = saved.get("train", {})
    try:
        scan = open_source(
            saved["data"],
            data_format=settings.get("data_format", "auto"),
            label_set=settings.get("label_set", "fine"),
            path_column=settings.get("path_column", "path"),
            label_column=settings.get("label_column", "label"),
            min_classes=1,
        )
    except DataError:
        return []
    by_id = {record.path: record for record in scan.records}
    rows = sorted(read_manifest(run_dir / SPLITS_FILE).items(), key=lambda row: row[1][1] != VAL)
    return [scan.absolute(by_id[path]) for path, _ in rows if path in by_id][:MAX_CHECK_IMAGES]


def _parity(
    model: nn.Module,
    format: str,
    path: Path,
    batch: np.ndarray,
    tolerance: float | None,
    device: torch.device,
) -> ExportReport:
    with torch.inference_mode():
        expected = place(model, device)(place(torch.from_numpy(batch), device)).float().cpu().numpy()
    place(model, CPU)
    actual = _run_export(format, path, batch, device)
    verdict = ParityVerdict.judge(expected, actual, tolerance)
    report = ExportReport(
        path,
        format,
        len(batch),
        verdict.max_diff,
        verdict.agreement,
        str(device),
        verdict.allowed,
        verdict.spread,
    )
    if not verdict.passed:
        raise ExportError(
            f"the {format} export does not reproduce the PyTorch model on {len(batch)} images: "
            f"{verdict.describe()}; nothing was written. A faithful export differs from PyTorch by "
            "float32 rounding only, so an operator of this network is exported differently; "
            "to accept larger differences anyway, pass an absolute limit with --tolerance"
        )
    return report


@dataclass(frozen=True)
class ParityVerdict:
    """The export's logits judged against PyTorch's (see the module docstring)."""

    max_diff: float
    allowed: float
    spread: float
    agreement: float
    decisive_flips: int  # top-1 changes on images whose leading logits were not a near tie

    @classmethod
    def judge(cls, expected: np.ndarray, actual: np.ndarray, tolerance: float | None) -> ParityVerdict:
        spread = float((expected.max(1) - expected.min(1)).max())
        noise = EXPORT_RELATIVE_TOLERANCE * max(spread, 1.0)
        allowed = noise if tolerance is None else tolerance
        rows = np.arange(len(expected))
        top, flipped_to = expected.argmax(1), actual.argmax(1)
        margin = expected[rows, top] - expected[rows, flipped_to]
        # Two logits each within ``noise`` of the truth can swap only if they were within 2 x noise.
        decisive = int(((top != flipped_to) & (margin > 2 * noise)).sum())
        return cls(
            max_diff=float(np.abs(actual - expected).max()),
            allowed=allowed,
            spread=spread,
            agreement=float((top == flipped_to).mean()),
            decisive_flips=decisive,
        )

    @property
    def passed(self) -> bool:
        return self.max_diff <= self.allowed and self.decisive_flips == 0

    def describe(self) -> str:
        return (
            f"max |logit diff| {self.max_diff:.3e} (allowed {self.allowed:.1e}, logit spread "
            f"{self.spread:.3g}), top-1 agreement {self.agreement:.4f}"
        )


def _run_export(format: str, path: Path, batch: np.ndarray, device: torch.device) -> np.ndarray:
    if format == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=_onnx_providers(device))
        return session.run(None, {session.get_inputs()[0].name: batch})[0]
    loaded = torch.jit.load(str(path), map_location=device)
    with torch.inference_mode():
        return loaded(place(torch.from_numpy(batch), device)).float().cpu().numpy()
