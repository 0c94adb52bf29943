"""Shared fixtures; markers come from the folder (unit / integration / gpu)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TESTS_DIR = Path(__file__).parent
FIXTURES = TESTS_DIR / "fixtures"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by its folder: tests/unit -> unit, tests/integration -> integration, ..."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(TESTS_DIR).parts
        if parts and parts[0] in ("unit", "integration", "gpu", "security"):
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def tiny_model():
    """The test-tiny model with seeded random weights (shared; tests must not modify it)."""
    import torch

    from core_model.build import build_model

    torch.manual_seed(1234)
    return build_model("test-tiny")


@pytest.fixture
def scene_image() -> np.ndarray:
    """A 96x128 RGB image: noise background with a flat red rectangle (rows 20-69, cols 30-89)."""
    image = np.random.default_rng(0).integers(0, 256, size=(96, 128, 3), dtype=np.uint8)
    image[20:70, 30:90] = [200, 40, 40]
    return image
