"""`unsamv2 evaluate` on a tiny image + mask folder with the random test-tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml_backend.cli import main


@pytest.fixture
def folder_dataset(tmp_path: Path, scene_image: np.ndarray) -> Path:
    root = tmp_path / "grabcut"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (rows, cols) in enumerate([((20, 70), (30, 90)), ((30, 60), (40, 80))]):
        mask = np.zeros(scene_image.shape[:2], dtype=np.uint8)
        mask[rows[0] : rows[1], cols[0] : cols[1]] = 255
        mask[rows[0] - 1, cols[0] : cols[1]] = 128  # GrabCut-style ignore band
        Image.fromarray(np.roll(scene_image, 7 * i, axis=1)).save(root / "images" / f"im{i}.jpg")
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
    return root


def test_evaluate_writes_markdown_json_and_charts(folder_dataset: Path, tmp_path: Path, capsys):
    out = tmp_path / "report"
    argv = ["evaluate", "--dataset", f"folder:{folder_dataset}", "--config", "test-tiny"]
    argv += ["--random-weights", "--out", str(out), "--max-clicks", "3", "--baseline", "sam2"]
    argv += ["--granularity-search", "instance", "--granularity-search", "click", "--ar"]
    argv += ["--ar-points-per-side", "3", "--ar-pred-iou-thresh", "0", "--ar-stability-thresh", "0"]
    argv += ["--granularities", "0.3", "1.0"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "granularity: 2 instances" in printed and "AR@1000" in printed
    assert {p.name for p in out.iterdir()} == {
        "report.md",
        "report.json",
        "miou_vs_clicks.png",
        "noc.png",
    }
    with Image.open(out / "noc.png") as png:
        assert png.format == "PNG"
    data = json.loads((out / "report.json").read_text())
    methods = [m["method"] for m in data["interactive"]]
    assert methods == ["granularity", "granularity-oracle", "sam2-best-of-3"]
    for entry in data["interactive"]:
        summary = entry["summary"]
        assert summary["count"] == 2
        assert 1 <= summary["NoC80"] <= summary["NoC90"] <= 3
        assert 0 <= summary["1-IoU"] <= 1
        assert all(len(i["ious"]) <= 3 for i in entry["instances"])
    assert data["metadata"]["model_checkpoint_kind"] == "random"
    assert data["metadata"]["granularities"] == "0.3 1"
    chosen = {i["chosen_granularity"] for i in data["interactive"][0]["instances"]}
    assert chosen <= {0.3, 1.0}
    assert 0 <= data["ar1000"]["ar1000"] <= 1 and data["ar1000"]["images"] == 2
    markdown = (out / "report.md").read_text()
    assert "| sam2-best-of-3 | 2 |" in markdown and "AR@1000 =" in markdown


def test_evaluate_limit_and_bad_dataset(folder_dataset: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r"
    argv = ["evaluate", "--dataset", f"folder:{folder_dataset}", "--config", "test-tiny"]
    argv += ["--random-weights", "--out", str(out), "--max-clicks", "1", "--limit", "1"]
    argv += ["--granularities", "0.5"]
    assert main(argv) == 0
    data = json.loads((out / "report.json").read_text())
    assert data["interactive"][0]["summary"]["count"] == 1 and data["ar1000"] is None
    bad = ["evaluate", "--dataset", f"folder:{tmp_path / 'missing'}", "--config", "test-tiny"]
    assert main([*bad, "--random-weights", "--out", str(out)]) == 2
    assert "unsamv2 evaluate: error:" in capsys.readouterr().err
