"""Finding, reading and fitting pretrained weights onto a timm network.

Reads torchvision, timm and ``efficientnet_pytorch`` state dicts (``.pth``/``.pt``/``.bin``
without unpickling arbitrary objects, or ``.safetensors``), adapts known key layouts, and
loads the tensors whose names and shapes match, with a report of what did not.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from imgcls.errors import WeightsError
from imgcls.models.registry import BackboneSpec

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

MIN_BACKBONE_MATCH = 0.9
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module", "net")
_HUB_HOST = ("huggingface.co", 443)


@dataclass(frozen=True)
class LocalWeights:
    """Pretrained weights found on this machine: ``kind`` is package, hf-cache or torch-cache."""

    kind: str
    path: Path

    def describe(self) -> str:
        return f"{self.kind}: {self.path}"


@dataclass
class KeyReport:
    """How a state dict lined up with a network."""

    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    backbone_total: int = 0
    backbone_matched: int = 0
    classifier_loaded: bool = False

    @property
    def backbone_fraction(self) -> float:
        return self.backbone_matched / self.backbone_total if self.backbone_total else 0.0

    def summary(self) -> str:
        head = "loaded" if self.classifier_loaded else "dropped (new classifier initialised)"
        return (
            f"{len(self.matched)} tensors matched ({self.backbone_matched}/{self.backbone_total} "
            f"backbone = {self.backbone_fraction:.1%}), {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.shape_mismatched)} shape-mismatched; "
            f"classifier {head}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "matched": len(self.matched),
            "missing": self.missing,
            "unexpected": self.unexpected,
            "shape_mismatched": [
                {"key": k, "file_shape": list(a), "model_shape": list(b)} for k, a, b in self.shape_mismatched
            ],
            "backbone_matched": self.backbone_matched,
            "backbone_total": self.backbone_total,
            "classifier_loaded": self.classifier_loaded,
        }


# ---------------------------------------------------------------------------------------------
# Reading files


def read_state_dict(path: str | Path) -> StateDict:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict (no arbitrary unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as exc:  # safetensors raises its own error types
            raise WeightsError(f"weights file {path} is not a valid safetensors file: {exc}") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise WeightsError(
            f"cannot read weights file {path} as a state dict ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Expected a torch.save()d state_dict "
            f"(.pth/.pt/.bin) or a .safetensors file."
        ) from exc
    return _unwrap(obj, path)


def _unwrap(obj: object, path: Path) -> StateDict:
    """Find the tensor mapping inside common checkpoint wrappers; strip DDP's ``module.``."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not _is_tensor_mapping(obj):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_tensor_mapping(obj):
        raise WeightsError(
            f"weights file {path} holds no state dict (found {type(obj).__name__}); save "
            f"model.state_dict(), not the model object"
        )
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def _is_tensor_mapping(obj: Mapping) -> bool:
    return bool(obj) and sum(isinstance(v, torch.Tensor) for v in obj.values()) > len(obj) / 2


# ---------------------------------------------------------------------------------------------
# Key layouts


def adapt_keys(state_dict: StateDict, model: nn.Module) -> StateDict:
    """Rename known foreign layouts (efficientnet_pytorch, old torchvision DenseNet) to timm's."""
    if "_conv_stem.weight" in state_dict:
        return efficientnet_pytorch_to_timm(state_dict, model)
    if any(_OLD_DENSENET.match(k) for k in state_dict):
        return {_OLD_DENSENET.sub(r"\1\2", k): v for k, v in state_dict.items()}
    return state_dict


# torchvision's pre-0.3 DenseNet checkpoints name layers "norm.1" instead of "norm1".
_OLD_DENSENET = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)

_EFFNET_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_EFFNET_DS_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_EFFNET_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def efficientnet_pytorch_to_timm(state_dict: StateDict, model: nn.Module) -> StateDict:
    """Map ``efficientnet_pytorch`` names (``_blocks.N._bn0``) onto timm's (``blocks.S.I.bn1``).

    The flat block index N follows timm's nested ``model.blocks`` in order; the first block
    type (depthwise-separable, no expansion) and the others (inverted residual) differ.
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise WeightsError(
            "this file uses efficientnet_pytorch key names (_conv_stem, _blocks.N); it only "
            "fits EfficientNet architectures"
        )
    flat = [
        (s, i, hasattr(block, "conv_pwl")) for s, stage in enumerate(blocks) for i, block in enumerate(stage)
    ]
    converted: StateDict = {}
    for key, tensor in state_dict.items():
        converted[_convert_effnet_key(key, flat)] = tensor
    return converted


def _convert_effnet_key(key: str, flat: list[tuple[int, int, bool]]) -> str:
    module, _, rest = key.partition(".")
    if module != "_blocks":
        return f"{_EFFNET_TOP.get(module, module)}.{rest}"
    index_text, _, rest = rest.partition(".")
    index = int(index_text)
    if index >= len(flat):
        return key  # more blocks in the file than in the model: reported as unexpected
    stage, position, inverted_residual = flat[index]
    layer, _, param = rest.partition(".")
    table = _EFFNET_IR_BLOCK if inverted_residual else _EFFNET_DS_BLOCK
    return f"blocks.{stage}.{position}.{table.get(layer, layer)}.{param}"


# ---------------------------------------------------------------------------------------------
# Loading onto a network


def classifier_prefix(model: nn.Module) -> str:
    """The state-dict prefix of the model's classification layer (``fc``, ``classifier``...)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("classifier") if isinstance(cfg, Mapping) else None
    return str(name) if name else "fc"


def match_state_dict(model: nn.Module, state_dict: StateDict) -> tuple[KeyReport, StateDict]:
    """Compare ``state_dict`` with the model's; return the report and the loadable subset."""
    target = model.state_dict()
    head = classifier_prefix(model) + "."
    report = KeyReport()
    loadable: StateDict = {}
    for key, tensor in state_dict.items():
        if key not in target:
            report.unexpected.append(key)
        elif tuple(tensor.shape) != tuple(target[key].shape):
            report.shape_mismatched.append((key, tuple(tensor.shape), tuple(target[key].shape)))
        else:
            loadable[key] = tensor
            report.matched.append(key)
    report.missing = [k for k in target if k not in state_dict]
    backbone_keys = [k for k in target if not k.startswith(head)]
    report.backbone_total = len(backbone_keys)
    report.backbone_matched = sum(k in loadable for k in backbone_keys)
    head_keys = [k for k in target if k.startswith(head)]
    report.classifier_loaded = bool(head_keys) and all(k in loadable for k in head_keys)
    return report, loadable


def load_matching(
    model: nn.Module,
    state_dict: StateDict,
    *,
    source: str,
    arch: str,
    min_fraction: float = MIN_BACKBONE_MATCH,
    strict: bool = False,
) -> KeyReport:
    """Load the tensors of ``state_dict`` that fit ``model``; fail if too little of it fits.

    With ``strict``, every backbone tensor must match and nothing may be left over (the
    classifier alone may be dropped for a new class count); the load itself is then
    ``load_state_dict(strict=True)`` whenever the classifier fits.
    """
    state_dict = adapt_keys(state_dict, model)
    report, loadable = match_state_dict(model, state_dict)
    head = classifier_prefix(model) + "."
    required = 1.0 if strict else min_fraction
    leftovers = [k for k in report.unexpected if not k.startswith(head)]
    if report.backbone_fraction < required or (strict and leftovers):
        raise WeightsError(_too_little_message(report, state_dict, model, source, arch, required))
    if not report.classifier_loaded:
        loadable = {k: v for k, v in loadable.items() if not k.startswith(head)}
    model.load_state_dict(loadable, strict=strict and report.classifier_loaded)
    return report


def _too_little_message(
    report: KeyReport,
    state_dict: StateDict,
    model: nn.Module,
    source: str,
    arch: str,
    min_fraction: float,
) -> str:
    expected = next((k for k in model.state_dict() if k in report.missing), "?")
    found = next(iter(state_dict), "?")
    return (
        f"weights {source} do not fit {arch}: only {report.backbone_matched} of "
        f"{report.backbone_total} backbone tensors ({report.backbone_fraction:.0%}) match by name "
        f"and shape, below the required {min_fraction:.0%} ({len(report.unexpected)} unexpected, "
        f"{len(report.shape_mismatched)} shape-mismatched). The model expects e.g. "
        f"{expected!r}; the file has e.g. {found!r}. Is the file for another architecture? "
        f"Pick the matching `backbone`."
    )


# ---------------------------------------------------------------------------------------------
# Finding pretrained weights on this machine


def locate_local_weights(spec: BackboneSpec) -> LocalWeights | None:
    """Look for the backbone's pretrained weights without touching the network."""
    for finder in (_package_weights, _hf_cache_weights, _torch_cache_weights):
        found = finder(spec)
        if found is not None:
            return found
    return None


def _package_weights(spec: BackboneSpec) -> LocalWeights | None:
    if not spec.weights_package:
        return None
    module = importlib.util.find_spec(spec.weights_package)
    if module is None or module.origin is None:
        return None
    files = sorted((Path(module.origin).parent / "models").glob("*.pth"))
    return LocalWeights("package", files[0]) if files else None


def _hf_cache_weights(spec: BackboneSpec) -> LocalWeights | None:
    cfg = _pretrained_cfg(spec)
    if cfg is None or not cfg.hf_hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else []
    for filename in [*names, "model.safetensors", "pytorch_model.bin"]:
        path = try_to_load_from_cache(repo_id=cfg.hf_hub_id, filename=filename)
        if isinstance(path, str) and Path(path).is_file():
            return LocalWeights("hf-cache", Path(path))
    return None


def _torch_cache_weights(spec: BackboneSpec) -> LocalWeights | None:
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    cfg = _pretrained_cfg(spec)
    names = list(spec.local_files)
    if cfg is not None and cfg.url:
        names.insert(0, cfg.url.rsplit("/", 1)[-1])
    for name in names:
        if (checkpoints / name).is_file():
            return LocalWeights("torch-cache", checkpoints / name)
    return None


def _pretrained_cfg(spec: BackboneSpec):  # noqa: ANN202 - timm's PretrainedCfg
    from timm.models import get_pretrained_cfg

    try:
        return get_pretrained_cfg(spec.pretrained_name, allow_unregistered=False)
    except (RuntimeError, KeyError, ValueError):
        return None


def offline_requested() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("IMGCLS_OFFLINE", "HF_HUB_OFFLINE")
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub answers at all; quick, so offline runs fail fast."""
    if offline_requested():
        return False
    try:
        with socket.create_connection(_HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False
