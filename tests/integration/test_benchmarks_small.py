"""Training and synthetic benchmarks run end to end (tiny sizes; figures are not checked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labeling_pipeline.evaluation.synthetic import SceneConfig, generate_scenes
from labeling_pipeline.evaluation.synthetic_benchmark import (
    SyntheticBenchmarkConfig,
    area_growth,
    heldout_samples,
    nested_points,
    run_synthetic_benchmark,
)
from labeling_pipeline.evaluation.synthetic_harder import HarderSceneConfig, generate_harder_scene
from ml_backend.cli import main


def test_bench_train_reports_both_rates(tmp_path: Path, capsys) -> None:
    out = tmp_path / "train.json"
    assert (
        main(
            [
                "bench",
                "train",
                "--config",
                "test-tiny",
                "--size",
                "128x96",
                "--images",
                "1",
                "--masks",
                "2",
                "--steps",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert result["cached_steps_per_s"] > 0 and result["reencode_steps_per_s"] > 0
    assert "speed-up" in capsys.readouterr().out


def test_synthetic_benchmark_pipeline(tmp_path: Path) -> None:
    config = SyntheticBenchmarkConfig(
        train_scenes=2,
        test_scenes=1,
        steps=2,
        max_clicks=2,
        granularities=(0.2, 1.0),
        scene=SceneConfig(height=96, width=128, min_objects=1, max_objects=1, clutter_count=4),
    )
    report = run_synthetic_benchmark(tmp_path, config)
    models = [row["model"] for row in report["rows"]]
    assert len(models) == 5 and models[-2] == "trained with granularity (search)"
    growth = [row["area_vs_granularity"] is not None for row in report["rows"]]
    assert growth == [True, False, False, True, False]
    for row in report["rows"]:
        assert 0.0 <= row["one_click_iou"] <= 1.0 and 1 <= row["noc90"] <= 2
    assert "| model |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "run-granularity" / "loss_curve.png").is_file()
    assert (tmp_path / "run-sam2" / "metrics.json").is_file()


def test_synthetic_benchmark_runs_on_the_harder_style(tmp_path: Path) -> None:
    config = SyntheticBenchmarkConfig(
        train_scenes=1,
        test_scenes=1,
        steps=2,
        max_clicks=1,
        granularities=(0.2, 1.0),
        style="harder",
        harder_scene=HarderSceneConfig(long_side_px=(160, 160), max_objects=2, clutter_count=4),
    )
    report = run_synthetic_benchmark(tmp_path, config)
    held_out = generate_harder_scene(100_000, config.harder_scene)
    assert report["instances"] == len(held_out.regions)
    assert report["config"]["style"] == "harder"
    assert "Style harder" in (tmp_path / "report.md").read_text()
    with pytest.raises(ValueError, match="style"):
        SyntheticBenchmarkConfig(style="photo")


def test_nested_points_lie_inside_parts_and_wholes() -> None:
    scenes = list(generate_scenes(2, seed=5, config=SceneConfig(height=96, width=128)))
    points = nested_points(scenes)
    assert len(points) == sum(len(o.parts) for s in scenes for o in s.objects)
    samples = heldout_samples(scenes)
    assert len(samples) == sum(len(s.regions) for s in scenes)
    for image, x, y in points:
        inside = [s for s in samples if s.image is image and s.gt[int(y), int(x)]]
        assert len(inside) == 2  # its part and its whole


class _SidePredictor:
    """Square masks whose side (in pixels, out of 10) is given per granularity."""

    def __init__(self, sides: dict[float, int]) -> None:
        self.sides = sides

    def embed(self, image):
        return image

    def predict_many(self, embedding, prompts, granularities):
        import numpy as np

        from core_model.types import MaskPrediction

        masks = np.zeros((len(granularities), 10, 10), bool)
        for i, g in enumerate(granularities):
            masks[i, : self.sides[g], : self.sides[g]] = True
        return MaskPrediction(
            masks,
            np.zeros(len(granularities), np.float32),
            np.zeros((len(granularities), 4, 4), np.float32),
            tuple(granularities),
            "granularity",
            "v",
        )


def test_area_growth_tells_coarse_from_strict_monotonicity() -> None:
    points = [(None, 1.0, 1.0)] * 3
    grid = (0.1, 0.3, 0.5, 0.7, 1.0)
    growing = _SidePredictor({0.1: 2, 0.3: 4, 0.5: 6, 0.7: 8, 1.0: 10})
    wiggly = _SidePredictor({0.1: 2, 0.3: 7, 0.5: 6, 0.7: 5, 1.0: 10})
    shrinking = _SidePredictor({0.1: 10, 0.3: 8, 0.5: 6, 0.7: 4, 1.0: 2})
    assert area_growth(growing, points, granularities=grid, tolerance=0) == {
        "grows": 1.0,
        "coarse": 1.0,
        "monotone": 1.0,
    }
    assert area_growth(wiggly, points, granularities=grid, tolerance=0) == {
        "grows": 1.0,
        "coarse": 1.0,
        "monotone": 0.0,
    }
    # Dips of about 30% are within a 50% tolerance.
    assert area_growth(wiggly, points, granularities=grid, tolerance=0.5)["monotone"] == 1.0
    assert area_growth(shrinking, points, granularities=grid, tolerance=0) == {
        "grows": 0.0,
        "coarse": 0.0,
        "monotone": 0.0,
    }


def test_bench_backend_checks_every_concurrent_answer(tmp_path: Path, capsys) -> None:
    out = tmp_path / "backend.json"
    code = main(
        [
            "bench",
            "backend",
            "--config",
            "test-tiny",
            "--size",
            "128x96",
            "--annotators",
            "3",
            "--clicks",
            "3",
            "--json",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    assert code == 0 and report["mismatches"] == 0 and report["failed_requests"] == []
    assert report["concurrent"]["clicks"] == 9 and report["single"]["p50_ms"] > 0
    assert "3 annotators" in capsys.readouterr().out
