"""Dependency direction and import-time rules, checked on the source."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core_model", "labeling_pipeline", "ml_backend")
FORBIDDEN_UPWARD = {
    "core_model": ("labeling_pipeline", "ml_backend"),
    "labeling_pipeline": ("ml_backend",),
    "ml_backend": (),
}
NEVER = (
    "torchvision",
    "timm",
    "sam2.sam2_image_predictor",
    "sam2.automatic_mask_generator",
    "sam2.utils.transforms",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module imported anywhere in the file (function-level imports included).

    ``from pkg import name`` yields both ``pkg`` and ``pkg.name`` (the name may be a module);
    relative imports are resolved against the file's package.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_no_upward_or_forbidden_imports(package: str) -> None:
    offenders = []
    for path in python_files(package):
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top in FORBIDDEN_UPWARD[package] or any(
                name == bad or name.startswith(bad + ".") for bad in NEVER
            ):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_environment_is_read_only_in_settings() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in python_files(package)
        if path.name != "settings.py"
        and ("os.environ" in path.read_text() or "os.getenv" in path.read_text())
    ]
    assert offenders == []


def test_importing_core_model_is_cheap() -> None:
    """`import core_model` must not pull torch, sam2 or Hydra (no work at import time)."""
    code = (
        "import sys, core_model, core_model.masks, core_model.types\n"
        "heavy = [m for m in ('torch', 'sam2', 'hydra') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _project_graph() -> dict[str, set[str]]:
    """Module -> project modules it imports (resolved to the longest existing module name)."""
    files = [p for pkg in PACKAGES for p in python_files(pkg) if "migrations" not in p.parts]
    modules = {module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_modules(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            # a module importing its own package's __init__ is not a dependency edge
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        graph[name] = targets
    return graph


def test_no_import_cycles() -> None:
    """No module reaches itself through imports, counting imports inside functions."""
    try:
        tuple(graphlib.TopologicalSorter(_project_graph()).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_library_code_never_imports_the_worker() -> None:
    """Only `labeling_pipeline.worker` knows Celery's side; libraries get dependencies passed in."""
    offenders = [
        f"{name} imports {target}"
        for name, targets in _project_graph().items()
        if name.startswith("labeling_pipeline.") and not name.startswith("labeling_pipeline.worker")
        for target in targets
        if target.startswith("labeling_pipeline.worker")
    ]
    assert offenders == []


def test_database_access_goes_through_the_store() -> None:
    """Queries and ORM writes live in `labeling_pipeline.store`; others only name a Session."""
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for package in ("labeling_pipeline", "ml_backend")
        for path in python_files(package)
        if "store" not in path.relative_to(ROOT).parts
        for name in imported_modules(path)
        if name.split(".")[0] == "sqlalchemy"
        and name not in ("sqlalchemy.orm", "sqlalchemy.orm.Session")
    ]
    assert offenders == []
