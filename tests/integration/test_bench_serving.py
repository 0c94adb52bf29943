"""`unsamv2 bench backend --serving`: one run compares both paths and checks every answer."""

from __future__ import annotations

import json
from pathlib import Path

from ml_backend.cli import main


def test_bench_serving_compares_both_paths_and_overload_gives_only_200_or_503(
    tmp_path: Path, capsys
) -> None:
    out = tmp_path / "serving.json"
    code = main(
        [
            "bench",
            "backend",
            "--serving",
            *("--config", "test-tiny", "--size", "128x96", "--annotators", "2"),
            *("--clicks", "2", "--think-s", "0.1", "--first-tasks", "1"),
            *("--overload-clients", "6", "--overload-bound", "1", "--json", str(out)),
        ]
    )
    report = json.loads(out.read_text())
    assert code == 0
    assert report["today_mismatches"] == report["new_mismatches"] == 0
    assert report["concurrent"]["new"]["clicks"] == report["concurrent"]["today"]["clicks"] == 8
    overload = report["overload"]
    assert overload["errors_other_than_503"] == 0 and overload["mismatches"] == 0
    assert sum(overload["statuses"].values()) == 12 and overload["statuses"].get("200", 0) >= 1
    printed = capsys.readouterr().out
    assert "throughput new/today" in printed and "first click" in printed
