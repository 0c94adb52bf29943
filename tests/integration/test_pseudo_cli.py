"""`unsamv2 pseudo-label` and `unsamv2 bench pseudo-label` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from labeling_pipeline.evaluation.synthetic import generate_scene
from labeling_pipeline.evaluation.synthetic_harder import HarderSceneConfig, generate_harder_scene
from ml_backend.cli import main


def make_folder(root: Path) -> Path:
    images = root / "images"
    (images / "nested").mkdir(parents=True)
    Image.fromarray(generate_scene(0).image).save(images / "a.png")
    Image.fromarray(generate_scene(1).image).save(images / "nested" / "b.jpg", quality=95)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    Image.fromarray(np.zeros((50, 60, 3), np.uint8)).save(images / "blank.png")
    return images


def test_pseudo_label_folder_summary_histogram_previews(tmp_path: Path, capsys) -> None:
    images, out = make_folder(tmp_path), tmp_path / "out"
    code = main(["pseudo-label", str(images), "--out", str(out), "--previews"])
    assert code == 0
    captured = capsys.readouterr()
    assert "done 2, already done 0, skipped 2" in captured.out
    assert "masks per image" in captured.out and "seconds per image" in captured.out
    assert "blank image" in captured.out and "broken.png" in captured.out
    assert (out / "a.json").is_file() and (out / "nested" / "b.json").is_file()
    assert (out / "previews" / "a.png").is_file() and (
        out / "previews" / "nested" / "b.png"
    ).is_file()
    histogram = np.asarray(Image.open(out / "granularity_histogram.png"))
    assert histogram.ndim == 3 and histogram.shape[2] == 3 and (histogram < 250).any()
    payload = json.loads((out / "nested" / "b.json").read_text())
    assert payload["image"]["file_name"] == "b.jpg" and payload["annotations"]
    assert "Traceback" not in captured.err

    code = main(["pseudo-label", str(images), "--out", str(out), "--no-progress"])
    assert code == 0
    assert "done 0, already done 2, skipped 2" in capsys.readouterr().out


def test_pseudo_label_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["pseudo-label", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unsamv2 pseudo-label: error:") and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    assert main(["pseudo-label", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no images" in capsys.readouterr().err
    images = make_folder(tmp_path)
    code = main(
        ["pseudo-label", str(images), "--out", str(tmp_path / "o"), "--features", "dinov3:/nope"]
    )
    assert code == 2 and "config.json" in capsys.readouterr().err
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"ncut": {"tua": 0.2}}))
    code = main(
        ["pseudo-label", str(images), "--out", str(tmp_path / "o"), "--config", str(config)]
    )
    assert code == 2 and "ncut.tua" in capsys.readouterr().err


def test_bench_pseudo_label_reports_seconds_per_image(tmp_path: Path, capsys) -> None:
    report = tmp_path / "bench.json"
    code = main(
        ["bench", "pseudo-label", "--features", "color", "--images", "1", "--size", "256",
         "--json", str(report)]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "s/image" in out and "color" in out
    (result,) = json.loads(report.read_text())["results"]
    assert result["features"] == "color" and result["width"] == 256 and result["images"] == 1
    assert result["seconds_per_image"] > 0 and result["feature_calls_per_image"] >= 1


def test_bench_pseudo_label_quality_prints_figures_and_writes_previews(
    tmp_path: Path, capsys
) -> None:
    report, previews = tmp_path / "quality.json", tmp_path / "previews"
    code = main(
        ["bench", "pseudo-label-quality", "--style", "harder", "--scenes", "1", "--seed", "3",
         "--size", "160", "--json", str(report), "--previews", str(previews)]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "granularity order" in out and "whole" in out and "part" in out
    summary = json.loads(report.read_text())
    assert summary["whole"]["count"] >= 1 and 0.0 <= summary["whole"]["recall@0.8"] <= 1.0
    assert summary["images_without_masks"] == 0
    # one picture per scene: image, ground truth and pseudo-labels side by side, 300 px high
    height, width = generate_harder_scene(
        3, HarderSceneConfig(long_side_px=(160, 160))
    ).image.shape[:2]
    picture = np.asarray(Image.open(previews / "scene-3.png"))
    assert picture.shape == (300, round(3 * width * 300 / height), 3)
