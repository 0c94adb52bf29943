"""The `unsamv2` command: segment and bench click, including error reporting."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml_backend.cli import main


@pytest.fixture
def image_file(tmp_path: Path, scene_image) -> Path:
    path = tmp_path / "scene.png"
    Image.fromarray(scene_image).save(path)
    return path


def run(argv: list[str]) -> int:
    return main(argv)


def test_segment_writes_mask_and_overlay(image_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out" / "mask.png"
    code = run(
        [
            "segment",
            str(image_file),
            "--config",
            "test-tiny",
            "--random-weights",
            "--point",
            "60,45",
            "--point",
            "5,5,0",
            "--box",
            "30,20,90,70",
            "--granularity",
            "0.4",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    mask = np.asarray(Image.open(out))
    assert mask.shape == (96, 128) and set(np.unique(mask)) <= {0, 255}
    overlay = np.asarray(Image.open(tmp_path / "out" / "mask_overlay.png"))
    assert overlay.shape == (96, 128, 3)
    assert "granularity 0.40" in capsys.readouterr().out


def test_segment_several_granularities_write_one_file_each(image_file: Path, tmp_path: Path):
    out = tmp_path / "m.png"
    assert (
        run(
            [
                "segment",
                str(image_file),
                "--config",
                "test-tiny",
                "--random-weights",
                "--point",
                "60,45",
                "--granularity",
                "0.2",
                "1.0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    for g in ("0.20", "1.00"):
        assert (tmp_path / f"m_g{g}.png").is_file()
        assert (tmp_path / f"m_g{g}_overlay.png").is_file()
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--point", "500,45"], "outside"),
        (["--point", "60,45", "--granularity", "1.5"], "granularity"),
        (["--box", "90,20,30,70"], "x0 < x1"),
    ],
)
def test_segment_errors_are_one_line(image_file, tmp_path, capsys, extra, message) -> None:
    code = run(
        [
            "segment",
            str(image_file),
            "--config",
            "test-tiny",
            "--random-weights",
            "--out",
            str(tmp_path / "x.png"),
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_segment_reports_unreadable_images(tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    for path in (broken, tmp_path / "missing.png"):
        code = run(
            [
                "segment",
                str(path),
                "--config",
                "test-tiny",
                "--random-weights",
                "--point",
                "1,1",
                "--out",
                str(tmp_path / "x.png"),
            ]
        )
        assert code == 2
        assert "image" in capsys.readouterr().err


def test_segment_needs_weights_or_an_explicit_random_flag(image_file: Path, tmp_path: Path):
    with pytest.raises(SystemExit) as info:
        run(["segment", str(image_file), "--point", "1,1", "--out", str(tmp_path / "x.png")])
    assert info.value.code == 2


def test_bad_point_syntax_is_rejected(image_file: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        run(
            [
                "segment",
                str(image_file),
                "--random-weights",
                "--point",
                "1,2,7",
                "--out",
                str(tmp_path / "x.png"),
            ]
        )


def test_bench_click_measures_both_paths(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert (
        run(
            [
                "bench",
                "click",
                "--config",
                "test-tiny",
                "--sizes",
                "64x48",
                "--clicks",
                "4",
                "--naive-clicks",
                "2",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "speed-up" in printed and "64x48" in printed
    result = json.loads(out.read_text())["results"][0]
    assert result["width"] == 64 and result["embedding_bytes"] > 0
    assert result["cached_p50_s"] > 0 and result["naive_p50_s"] > 0
    assert result["decoder_p50_s"] > 0 and "decoder p50" in printed
    assert result["speedup_p50"] == pytest.approx(result["naive_p50_s"] / result["cached_p50_s"])


def test_console_script_is_installed() -> None:
    exe = shutil.which("unsamv2", path=str(Path(sys.executable).parent))
    assert exe is not None
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True)
    assert "segment" in out.stdout and "bench" in out.stdout
