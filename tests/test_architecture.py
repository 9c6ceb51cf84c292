"""Imports point downward only: pure code at the bottom, the CLI on top."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "imgcls"

# Each module may import only modules of a lower layer (or its own).
LAYERS = [
    {"errors", "predictions", "profiling", "layout", "cpu_features"},
    {"config", "images", "registry", "metrics", "calibration", "stats", "svg_charts", "known_preprocessing"},
    {"data", "transforms", "weights", "head", "model_io", "report", "pixels", "batch", "efficientnet_lite"},
    {
        "precision",
        "checkpoint",
        "network_split",
        "finetune_plan",
        "batchnorm_fold",
        "train_fast_path",
        "weight_interpolation",
    },
    {"splits", "backbone", "onnx_runtime", "server", "trainloop", "prefetch"},
    {"features", "tasks", "history", "inspect_data", "runtime_choice"},
    {"classifier", "probe"},
    {"finetune"},
    {"api", "catalog", "export", "run_comparison"},
    {"crossval"},
    {"demo"},
    {"cli_options"},
    {"cli_train", "cli_use"},
    {"cli", "__main__", "__init__"},
]

# What an inference-only install (numpy, Pillow, onnxruntime, FastAPI) runs: no torch anywhere.
TORCH_FREE = {
    "errors",
    "predictions",
    "config",
    "images",
    "data",
    "pixels",
    "batch",
    "onnx_runtime",
    "server",
    "layout",
    "cpu_features",
    "prefetch",
    "runtime_choice",
    "known_preprocessing",
}


def _layer_of(module: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if module in layer)


def _imgcls_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("imgcls."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("imgcls."))
    return found


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules == set().union(*LAYERS)


def test_imports_point_downward():
    violations = []
    for path in PACKAGE.glob("*.py"):
        layer = _layer_of(path.stem)
        for imported in _imgcls_imports(path):
            if _layer_of(imported) > layer:
                violations.append(
                    f"{path.stem} (layer {layer}) imports {imported} (layer {_layer_of(imported)})"
                )
    assert not violations, violations


def test_only_backbone_calls_the_timm_model_factory_and_only_transforms_builds_transforms():
    for path in PACKAGE.glob("*.py"):
        text = path.read_text()
        if path.stem != "backbone":
            assert "create_model(" not in text, path.name
        if path.stem != "transforms":
            assert "T.Compose" not in text and "Normalize(" not in text, path.name


def test_the_onnx_inference_path_never_imports_torch():
    heavy = {"torch", "torchvision", "timm", "sklearn", "scipy", "matplotlib", "safetensors"}
    for name in TORCH_FREE:
        path = PACKAGE / f"{name}.py"
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            modules = (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                if isinstance(node, ast.Import) else []
            )  # fmt: skip
            for module in modules:
                assert module.split(".")[0] not in heavy, f"{name} imports {module}"
                if module.startswith("imgcls."):
                    assert module.split(".")[1] in TORCH_FREE, f"{name} imports {module}"
