"""Dependency direction and import-time rules, checked on the source."""

from __future__ import annotations

import ast
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


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
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
