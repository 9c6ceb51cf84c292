"""The tree shows the data path, and imports follow it: each subpackage imports only those below it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "imgcls"

# The foundation every subpackage may use: top-level modules that import no subpackage.
FOUNDATION = {"errors", "config", "_files"}
# Top-level modules that only lead into the package: they may import anything.
ENTRY_POINTS = {"__init__", "__main__", "onnx_runtime"}

# What each subpackage may import besides itself and the foundation. Siblings (models and
# evaluation; inference and training) do not import each other.
ALLOWED: dict[str, set[str]] = {
    "system": set(),
    "data": {"system"},
    "models": {"system", "data"},
    "evaluation": {"system", "data"},
    "inference": {"system", "data", "models", "evaluation"},
    "training": {"system", "data", "models", "evaluation"},
    "deploy": {"system", "data", "models", "evaluation", "inference"},
    "workflows": {"system", "data", "models", "evaluation", "inference", "training", "deploy"},
    "cli": {"system", "data", "models", "evaluation", "inference", "training", "deploy", "workflows"},
}

# What an inference-only install (numpy, Pillow, onnxruntime, FastAPI) runs: no torch anywhere.
TORCH_FREE = {
    "errors",
    "config",
    "_files",
    "system.wording",
    "system.launcher",
    "system.cpu",
    "system.profiling",
    "data.sources.folders",
    "data.records",
    "data.sources.manifests",
    "data.sources.cifar",
    "data.sources",
    "data.sources.imagenet",
    "data.sources.webdataset",
    "data.convert",
    "data.sources.huggingface",
    "data.embedding_files",
    "data.images",
    "data.preprocessing",
    "data._pixels",
    "data._prefetch",
    "evaluation.metrics",
    "inference.predictions",
    "inference.batch",
    "inference.onnx_runtime",
    "inference.runtime_choice",
    "inference.similarity",
    "deploy.server",
}
HEAVY = {"torch", "torchvision", "timm", "sklearn", "scipy", "matplotlib", "safetensors"}


def _modules() -> dict[str, Path]:
    """Dotted names below ``imgcls`` (``data.splits``, ``errors``, ``cli``) and their files."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imported_modules(tree: ast.AST) -> list[str]:
    """Dotted module names a tree imports; ``from imgcls import x`` imports ``imgcls.x`` where
    x is a module of the package, else the package's own ``imgcls.__init__``."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "imgcls":
            names.extend(
                f"imgcls.{alias.name}" if alias.name in _modules() else "imgcls.__init__"
                for alias in node.names
            )
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def _imgcls_imports(path: Path) -> set[str]:
    """The imgcls modules ``path`` imports, without the ``imgcls.`` prefix."""
    return {
        name.removeprefix("imgcls.")
        for name in _imported_modules(ast.parse(path.read_text()))
        if name.startswith("imgcls.")
    }


def _owner(module: str) -> str:
    """The subpackage a module belongs to, or the top-level module's own name."""
    return module.split(".")[0]


def import_violations(imports: dict[str, set[str]]) -> list[str]:
    """Imports that point upward or sideways, for a map of module -> the modules it imports."""
    violations = []
    for module, imported in imports.items():
        owner = _owner(module)
        if owner in ENTRY_POINTS:
            continue
        for target in imported:
            target_owner = _owner(target)
            if target_owner == owner or (target_owner in FOUNDATION and owner not in FOUNDATION):
                continue
            if owner in FOUNDATION:
                allowed = target_owner in FOUNDATION
            else:
                allowed = target_owner in ALLOWED.get(owner, set())
            if not allowed:
                violations.append(f"{module} imports {target}")
    return violations


def test_the_top_level_holds_only_entry_points_and_the_foundation():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top <= FOUNDATION | ENTRY_POINTS
    assert len(top - {"__init__", "__main__"}) <= 4
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(ALLOWED)


def test_every_subpackage_init_is_a_docstring_alone():
    for package in ALLOWED:
        tree = ast.parse((PACKAGE / package / "__init__.py").read_text())
        assert ast.get_docstring(tree), package
        assert len(tree.body) == 1, f"{package}/__init__.py should hold only its docstring"


def test_imports_point_down_the_data_path():
    imports = {module: _imgcls_imports(path) for module, path in _modules().items()}
    assert not import_violations(imports)


def _runtime_imports(path: Path) -> set[str]:
    """The imgcls modules ``path`` imports when it runs: at module level and inside functions,
    but not for type checking alone."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    return {name.removeprefix("imgcls.") for name in _imported_modules(tree) if name.startswith("imgcls.")}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk of ``graph`` (module -> modules it imports) meets."""
    state: dict[str, int] = {}  # 1: on the walk's path, 2: done
    cycles: list[list[str]] = []

    def walk(module: str, path: list[str]) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, set())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                walk(target, path)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [])
    return cycles


def test_no_module_imports_itself_round_a_cycle_even_inside_functions():
    modules = _modules()
    graph = {name: _runtime_imports(path) & set(modules) for name, path in modules.items()}
    assert not import_cycles(graph)
    assert import_cycles(
        {"inference.classifier": {"inference.encoder"}, "inference.encoder": {"inference.classifier"}}
    )


def test_the_check_sees_an_import_from_the_package_itself():
    tree = ast.parse("from imgcls import __version__, errors\nfrom imgcls import train")
    assert sorted(_imported_modules(tree)) == ["imgcls.__init__", "imgcls.__init__", "imgcls.errors"]
    assert import_violations({"workflows.run_summary": {"__init__"}}) == [
        "workflows.run_summary imports __init__"
    ]


def test_the_check_catches_a_lower_subpackage_importing_a_higher_one():
    assert import_violations({"data.splits": {"training.probe"}}) == ["data.splits imports training.probe"]
    assert import_violations({"training.probe": {"inference.classifier"}})  # siblings
    assert import_violations({"errors": {"data.images"}})  # the foundation imports no subpackage
    assert not import_violations({"training.probe": {"data.splits", "config", "training.linear_head"}})
    assert not import_violations({"cli.main": {"workflows.train"}})


def test_only_backbone_calls_the_timm_model_factory_and_only_transforms_builds_transforms():
    for module, path in _modules().items():
        text = path.read_text()
        if module != "models.backbone":
            assert "create_model(" not in text, module
        if module != "data.transforms":
            assert "T.Compose" not in text and "Normalize(" not in text, module


def test_the_onnx_inference_path_never_imports_torch():
    modules = _modules()
    for name in TORCH_FREE:
        for module in _imported_modules(ast.parse(modules[name].read_text())):
            assert module.split(".")[0] not in HEAVY, f"{name} imports {module}"
            if module.startswith("imgcls."):
                assert module.removeprefix("imgcls.") in TORCH_FREE, f"{name} imports {module}"


def test_every_public_name_resolves_without_importing_torch_first():
    code = (
        "import sys, imgcls\n"
        "assert 'torch' not in sys.modules\n"
        "missing = [n for n in imgcls.__all__ if getattr(imgcls, n, None) is None]\n"
        "print(missing)"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
