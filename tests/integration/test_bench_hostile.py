"""`unsamv2 bench backend --hostile` runs end to end on the tiny model (figures are not checked)."""

from __future__ import annotations

import json
from pathlib import Path

from ml_backend.cli import main


def test_hostile_bench_reports_both_runs_and_every_hostile_kind(tmp_path: Path, capsys) -> None:
    out = tmp_path / "hostile.json"
    args = ["bench", "backend", "--config", "test-tiny", "--size", "128x96"]
    code = main([*args, "--annotators", "2", "--clicks", "3", "--hostile", "--json", str(out)])
    report = json.loads(out.read_text())
    hostile = report["hostile"]
    assert code == 0 and hostile["mismatches"] == 0 and hostile["failed_requests"] == []
    assert hostile["clicks"] == 6 and hostile["p95_ratio"] > 0
    assert hostile["valid_5xx"] == 0 and hostile["hostile_5xx"] == 0
    statuses = hostile["hostile_statuses"]
    assert set(statuses) == {"slow_drip", "oversized", "huge_size"}
    assert set(statuses["oversized"]) <= {"413", "none"} and statuses["oversized"]
    assert statuses["huge_size"] and all(s.startswith("4") for s in statuses["huge_size"])
    assert "hostile clients" in capsys.readouterr().out
