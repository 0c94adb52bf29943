"""Markdown + JSON report and PNG charts from known results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from labeling_pipeline.evaluation import (
    ARResult,
    InstanceResult,
    InteractiveConfig,
    InteractiveResult,
    summarize,
    write_report,
)
from labeling_pipeline.evaluation.clicker import Click
from labeling_pipeline.plots import bar_chart, line_chart


def result(method: str, sequences: list[list[float]]) -> InteractiveResult:
    cfg = InteractiveConfig(method=method, max_clicks=5)
    instances = tuple(
        InstanceResult(
            image_id="im",
            instance_id=str(i),
            ious=tuple(s),
            clicks=tuple(Click(i, 0, True) for _ in s),
            granularities=tuple(0.5 for _ in s),
            chosen_granularity=0.5 if method == "granularity" else None,
        )
        for i, s in enumerate(sequences)
    )
    summary = summarize(sequences, thresholds=cfg.iou_thresholds, max_clicks=5)
    return InteractiveResult(method, cfg, instances, summary)


def test_report_files_and_contents(tmp_path: Path) -> None:
    results = [
        result("granularity", [[0.5, 0.95], [0.85, 0.91]]),
        result("sam2-best-of-3", [[0.3, 0.6, 0.7, 0.75, 0.79]]),
    ]
    ar = ARResult(
        ar1000=0.42,
        stats={"AR@1000": 0.42, "AP": float("nan")},
        images=2,
        images_without_predictions=0,
        gt_masks=3,
        predictions=7,
    )
    paths = write_report(tmp_path / "out", results, ar, metadata={"dataset": "toy"})
    assert paths.markdown.name == "report.md" and paths.json.name == "report.json"
    assert [p.name for p in paths.plots] == ["miou_vs_clicks.png", "noc.png"]
    for plot in paths.plots:
        with Image.open(plot) as img:
            assert img.format == "PNG" and img.size == (720, 440)
    data = json.loads(paths.json.read_text())
    assert data["metadata"] == {"dataset": "toy"}
    assert [m["method"] for m in data["interactive"]] == ["granularity", "sam2-best-of-3"]
    summary = data["interactive"][0]["summary"]
    assert summary["NoC90"] == 2.0 and summary["NoC80"] == 1.5 and summary["1-IoU"] == 0.675
    assert data["interactive"][0]["instances"][0]["ious"] == [0.5, 0.95]
    assert data["interactive"][0]["instances"][0]["clicks"][0] == {"x": 0, "y": 0, "positive": True}
    assert data["interactive"][1]["summary"]["NoF80"] == 1
    assert data["ar1000"]["ar1000"] == 0.42 and data["ar1000"]["stats"]["AP"] is None  # NaN
    text = paths.markdown.read_text()
    assert "| granularity | 2 | 1.50 | 2.00 | 0 | 0 | 0.675 |" in text
    assert "AR@1000 = **0.420**" in text
    assert "![miou_vs_clicks](miou_vs_clicks.png)" in text
    assert "| 0.5 | 2 |" in text  # chosen granularity histogram


def test_charts_draw_nan_and_many_points() -> None:
    line = line_chart(
        {"a": [float("nan"), 0.5, 0.7] + [0.8] * 30}, title="t", x_label="x", y_label="y"
    )
    bars = bar_chart(["NoC80", "NoC90"], {"a": [3.0, float("nan")]}, title="t", y_label="NoC")
    assert line.mode == bars.mode == "RGB"
    for chart in (line, bars):
        assert len(np.unique(np.asarray(chart).reshape(-1, 3), axis=0)) > 2
