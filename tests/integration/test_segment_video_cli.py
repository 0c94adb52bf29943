"""`unsamv2 segment-video` and `unsamv2 bench video` end to end on the tiny model."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from ml_backend.cli import main

H, W = 96, 128
TINY = ["--config", "test-tiny", "--random-weights", "--no-progress"]


def write_clip(path: Path, count: int) -> Path:
    """Write a clip of a disc moving right over a grey background (MPEG-4)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (W, H))
    for i in range(count):
        frame = np.full((H, W, 3), 60, np.uint8)
        cv2.circle(frame, (30 + 6 * i, 48), 18, (0, 200, 255), -1)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("video") / "clip.mp4", 10)


def count_frames(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count


def test_segment_video_writes_masks_overlay_and_coco(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["segment-video", str(clip), *TINY[:-1], "--frame", "4", "--point", "54,48"]
    argv += ["--point", "5,5,0", "--granularity", "0.4", "--object", "3", "--out", str(out)]
    assert main([*argv, "--both", "--max-frames", "3"]) == 0
    captured = capsys.readouterr()
    assert "frame/s" in captured.err  # the progress bar
    assert re.search(r"7 frames \(\d+\.\d+ frames/s\)", captured.out)

    pngs = sorted((out / "masks").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}_obj3.png" for i in range(1, 8)]
    masks = {int(p.name[:5]): np.asarray(Image.open(p)) > 0 for p in pngs}
    assert all(m.shape == (H, W) for m in masks.values())
    assert count_frames(out / "overlay.mp4") == 7

    coco = json.loads((out / "annotations.json").read_text())
    assert [image["frame_index"] for image in coco["images"]] == list(range(1, 8))
    assert coco["images"][0]["timestamp_ms"] == pytest.approx(100.0, abs=1.0)
    assert coco["info"]["granularity"] == 0.4 and coco["info"]["prompt_frame"] == 4
    annotations = coco["annotations"]
    assert annotations, "random weights left every mask empty: nothing to check"
    assert len(annotations) == sum(bool(m.any()) for m in masks.values())
    for a in annotations:
        assert a["object_id"] == 3 and a["granularity"] == 0.4 and 0.0 <= a["score"] <= 1.0
        rle = {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}
        decoded = mask_utils.decode(rle).astype(bool)
        np.testing.assert_array_equal(decoded, masks[a["frame_index"]])
        assert a["area"] == int(decoded.sum()) and a["image_id"] == a["frame_index"] + 1


def test_segment_video_reads_frame_folders_backwards(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        image = np.full((H, W, 3), 40 * i, np.uint8)
        Image.fromarray(image).save(folder / f"{i:05d}.jpg")
    out = tmp_path / "out"
    argv = ["segment-video", str(folder), *TINY, "--frame", "2", "--box", "20,20,80,70"]
    assert main([*argv, "--reverse", "--max-frames", "1", "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["00001_obj1.png", "00002_obj1.png"]
    assert count_frames(out / "overlay.mp4") == 2


def broken_files(tmp_path: Path, clip: Path) -> dict[str, Path]:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"definitely not a video" * 50)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    return {"garbage": garbage, "truncated": truncated, "missing": tmp_path / "missing.mp4"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--frame", "10", "--point", "5,5"], "frame 10 does not exist"),
        (["--frame", "-1", "--point", "5,5"], "frame -1 does not exist"),
        (["--point", "500,40"], "outside"),
        (["--point", "5,5", "--granularity", "1.5"], "granularity"),
        ([], "prompt"),
        (["--point", "5,5", "--fps", "0"], "--fps must be positive"),
    ],
)
def test_bad_prompts_are_one_line_errors(
    clip: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    code = main(["segment-video", str(clip), *TINY, "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("unsamv2 segment-video: error:") and err.count("\n") == 1
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["garbage", "truncated", "missing"])
def test_unreadable_videos_are_one_line_errors(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    path = broken_files(tmp_path, clip)[kind]
    code = main(["segment-video", str(path), *TINY, "--point", "5,5", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"video {path.name}" in err


def test_the_command_prints_one_line_for_a_truncated_video(clip: Path, tmp_path: Path) -> None:
    """In a fresh process FFmpeg's own complaints stay off stderr too."""
    path = broken_files(tmp_path, clip)["truncated"]
    exe = Path(sys.executable).parent / "unsamv2"
    argv = [str(exe), "segment-video", str(path), *TINY, "--point", "5,5", "--out", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "unsamv2 segment-video: error: cannot read video truncated.mp4: not a video file, or a "
        "broken or truncated container"
    ]


def test_bad_point_syntax_is_a_usage_error(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["segment-video", str(clip), *TINY, "--point", "1,2,7", "--out", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "X,Y[,0|1]" in err and "Traceback" not in err


def test_bench_video_prints_speed_and_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "video.json"
    argv = ["bench", "video", "--config", "test-tiny", "--size", "160x96", "--device", "cpu"]
    assert main([*argv, "--frames", "3", "--early", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"\d+ threads", printed)
    rows = re.findall(
        r"after (\d+) frames: ([\d.]+) frames/s, RSS (\d+) MiB, session ([\d.]+) MiB", printed
    )
    assert [int(r[0]) for r in rows] == [2, 3]
    assert all(float(r[1]) > 0 and int(r[2]) > 0 for r in rows)
    ratio = float(re.search(r"RSS ratio 3/2 frames: ([\d.]+)", printed).group(1))  # type: ignore[union-attr]
    assert ratio == pytest.approx(int(rows[1][2]) / int(rows[0][2]), abs=0.01)
    result = json.loads(out.read_text())
    assert [p["frames"] for p in result["points"]] == [2, 3] and result["granularity"] == 0.5
