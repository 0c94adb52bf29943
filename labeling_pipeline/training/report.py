"""The report of a training run: `report.json`, `report.md` and PNG charts in the run folder.

Files (next to the trainer's `loss_curve.png` and `metrics.json`):

- `report.json`: scope, version, parent, held-out split, gate settings, both models' held-out
  scores, the verdict and the training summary;
- `report.md`: the same as tables, with the charts linked;
- `heldout_iou_vs_clicks.png`: mean IoU after k clicks on the held-out masks, candidate vs
  current;
- `heldout_iou_by_granularity.png`: first-click IoU at the annotator's recorded granularity,
  per granularity, candidate vs current.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labeling_pipeline.plots import bar_chart, line_chart
from labeling_pipeline.training.gate import GateConfig, Scores, Verdict

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
CLICKS_PLOT = "heldout_iou_vs_clicks.png"
GRANULARITY_PLOT = "heldout_iou_by_granularity.png"
LOSS_PLOT = "loss_curve.png"
REPORT_FILES = (REPORT_MD, REPORT_JSON, CLICKS_PLOT, GRANULARITY_PLOT, LOSS_PLOT)


@dataclass(frozen=True)
class RunReport:
    """Everything a run's report shows.

    Attributes:
        scope: Lineage of the run.
        version: Name of the candidate version (None if it was never written).
        parent: Name of the version it was compared with (None: the base checkpoint).
        holdout: Held-out split facts (images, masks, fraction, image ids).
        gate: Gate settings.
        candidate: Candidate's held-out scores (None if not scored).
        current: Current version's held-out scores (None if not scored).
        verdict: The gate's decision.
        training: Training summary (steps, images, losses).
        outcome: What happened to the version ("published", "rejected", "held back", ...).
    """

    scope: str
    version: str | None
    parent: str | None
    holdout: Mapping[str, Any]
    gate: GateConfig
    candidate: Scores | None
    current: Scores | None
    verdict: Verdict
    training: Mapping[str, Any]
    outcome: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "scope": self.scope,
            "version": self.version,
            "parent": self.parent,
            "outcome": self.outcome,
            "verdict": self.verdict.to_dict(),
            "gate": self.gate.to_dict(),
            "holdout": dict(self.holdout),
            "candidate": self.candidate.to_dict() if self.candidate else None,
            "current": self.current.to_dict() if self.current else None,
            "training": dict(self.training),
        }


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.3f}"


def _metrics_table(report: RunReport) -> list[str]:
    names = ("annotator_iou", "1-IoU", "NoC85", "NoC90", "annotator_count")
    rows = ["| metric | candidate | current |", "|---|---|---|"]
    for name in names:
        new = report.candidate.metrics.get(name) if report.candidate else None
        old = report.current.metrics.get(name) if report.current else None
        rows.append(f"| {name} | {_fmt(new)} | {_fmt(old)} |")
    return rows


def _markdown(report: RunReport, plots: list[str]) -> str:
    verdict = report.verdict
    lines = [
        f"# Training run of {report.scope}",
        "",
        f"- version: `{report.version or '-'}` ({report.outcome})",
        f"- compared with: `{report.parent or 'base checkpoint'}`",
        f"- gate: **{verdict.decision}**: {verdict.reason}",
        f"- held out: {report.holdout.get('images', 0)} image(s), "
        f"{report.holdout.get('masks', 0)} accepted mask(s) "
        f"(fraction {report.gate.holdout_fraction:g}, never trained on)",
        f"- training: {report.training.get('steps', 0)} steps on "
        f"{report.training.get('images', 0)} image(s), loss "
        f"{_fmt(report.training.get('loss_first'))} -> {_fmt(report.training.get('loss_last'))}",
        "",
        "## Held-out metrics",
        "",
        "annotator_iou: IoU of the first-click mask at the granularity recorded for each mask. "
        "NoC85/NoC90/1-IoU: simulated clicks with the per-instance granularity search "
        f"(budget {report.gate.max_clicks} clicks).",
        "",
        *_metrics_table(report),
        "",
    ]
    lines += [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def _plots(report: RunReport, folder: Path) -> list[str]:
    written = []
    if report.candidate is not None and report.current is not None:
        line_chart(
            {"candidate": report.candidate.miou_curve, "current": report.current.miou_curve},
            title=f"Held-out IoU vs clicks ({report.scope})",
            x_label="clicks",
            y_label="mean IoU",
        ).save(folder / CLICKS_PLOT)
        written.append(CLICKS_PLOT)
        groups = sorted(set(report.candidate.per_granularity) | set(report.current.per_granularity))
        if groups:
            nan = float("nan")
            bar_chart(
                groups,
                {
                    "candidate": [report.candidate.per_granularity.get(g, nan) for g in groups],
                    "current": [report.current.per_granularity.get(g, nan) for g in groups],
                },
                title="First-click IoU at the annotator's granularity",
                y_label="mean IoU",
            ).save(folder / GRANULARITY_PLOT)
            written.append(GRANULARITY_PLOT)
    if (folder / LOSS_PLOT).is_file():
        written.append(LOSS_PLOT)
    return written


def write_run_report(report: RunReport, folder: Path) -> list[Path]:
    """Write `report.json`, `report.md` and the charts into `folder`; return the files."""
    folder.mkdir(parents=True, exist_ok=True)
    plots = _plots(report, folder)
    (folder / REPORT_JSON).write_text(json.dumps(report.to_dict(), indent=2, default=str))
    (folder / REPORT_MD).write_text(_markdown(report, plots))
    return [folder / REPORT_MD, folder / REPORT_JSON, *(folder / p for p in plots)]
