"""CUDA checks (skipped without a GPU): device placement and the bf16 autocast path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core_model.build import build_model
from core_model.predictor import GranularityPredictor
from core_model.types import Prompts

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_cuda_prediction_agrees_with_cpu(scene_image) -> None:
    torch.manual_seed(1234)
    cpu = GranularityPredictor(build_model("test-tiny"))
    torch.manual_seed(1234)
    gpu = GranularityPredictor(build_model("test-tiny", device="cuda"))
    prompts = Prompts.from_arrays([[60.0, 45.0]], [1])
    expected = cpu.predict(cpu.embed(scene_image), prompts, granularity=0.4)
    embedding = gpu.embed(scene_image)
    assert embedding.image_embed.is_cuda
    got = gpu.predict(embedding, prompts, granularity=0.4)
    assert got.masks.shape == expected.masks.shape
    # bf16 autocast: logits agree loosely, masks almost everywhere
    np.testing.assert_allclose(got.low_res_logits, expected.low_res_logits, atol=0.15)
    assert (got.masks == expected.masks).mean() > 0.98
