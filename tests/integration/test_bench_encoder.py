"""`unsamv2 bench encoder` runs end to end on the tiny model (figures are not checked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from core_model.build import build_model
from ml_backend.cli import main
from ml_backend.cli.bench_encoder import count_flops


def test_flop_count_includes_attention_and_fused_matmuls() -> None:
    torch.manual_seed(0)
    model = build_model("test-tiny")
    images = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        stock, per_op = count_flops(lambda: model.encode_image(images, fast=False))
        fast, fast_per_op = count_flops(lambda: model.encode_image(images))
    attention = [v for k, v in per_op.items() if "attention" in k]
    assert attention and min(attention) > 0
    assert stock == sum(per_op.values())
    # the fast path's oneDNN matmuls are counted too (it only drops the fused 1x1 convolutions)
    if torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        assert any("linear_pointwise" in k for k in fast_per_op)
    assert 0.2 * stock < fast < stock


def test_bench_encoder_reports_both_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "encoder.json"
    args = ["bench", "encoder", "--config", "test-tiny", "--size", "128x96", "--repeats", "1"]
    assert main([*args, "--sgemm-sizes", "256", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["paths"]) == {"stock", "fast"}
    assert result["floor_s"] > 0 and result["stock_gflop"] > result["fast_gflop"] > 0
    fast = result["paths"]["fast"]
    assert fast["max_abs_logit_delta"] < 1e-4 and fast["mask_pixels_differing"] == 0
    assert result["paths"]["stock"]["speedup"] == 1.0
    assert "time/floor" in capsys.readouterr().out
