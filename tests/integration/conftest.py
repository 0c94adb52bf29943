"""Helpers that write checkpoint files of every kind from tiny random models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core_model.build import build_model
from core_model.checkpoint import is_granularity_key, official_state_dict


def fresh_tiny(seed: int = 1234):
    torch.manual_seed(seed)
    return build_model("test-tiny")


@pytest.fixture
def official_checkpoint(tmp_path: Path) -> Path:
    """An official-layout file (original_layer + unmerged LoRA) with non-zero LoRA B."""
    model = fresh_tiny(7)
    state = official_state_dict(model, lora_rank=8, seed=3)
    generator = torch.Generator().manual_seed(11)
    for key in state:
        if key.endswith(".lora_B"):
            state[key] = torch.randn(state[key].shape, generator=generator) * 0.05
    path = tmp_path / "unsamv2_official.pt"
    torch.save({"model": state, "epoch": 5}, path)
    return path


@pytest.fixture
def sam2_checkpoint(tmp_path: Path) -> Path:
    """A plain SAM-2.1-style file: no granularity tensors, no LoRA."""
    model = fresh_tiny(5)
    state = {k: v for k, v in model.state_dict().items() if not is_granularity_key(k)}
    path = tmp_path / "sam2.1_tiny.pt"
    torch.save({"model": state}, path)
    return path


@pytest.fixture
def make_tiny():
    """Factory: `make_tiny(seed)` builds a fresh test-tiny model that a test may modify."""
    return fresh_tiny
