"""Evaluation reports: `report.json` (everything), `report.md` (tables) and PNG charts.

Files written into the output folder:

- `report.json`: metadata, per-method configuration and summary (NoC@t, NoF@t, 1-IoU, mIoU
  curve), per-instance IoU sequences, clicks and granularities, and the AR@1000 statistics;
- `report.md`: the same summary as markdown tables, with the charts linked;
- `miou_vs_clicks.png`: mean IoU after k clicks, one line per method;
- `noc.png`: NoC@t bars per method.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labeling_pipeline.evaluation.ar import ARResult
from labeling_pipeline.evaluation.interactive import InteractiveResult
from labeling_pipeline.plots import bar_chart, line_chart

MIOU_PLOT = "miou_vs_clicks.png"
NOC_PLOT = "noc.png"

_PROTOCOL = """\
- Clicks: deterministic simulator (FN/FP regions padded by 1 px, exact L2 distance transform,
  clicked pixels excluded; positive if max dt(FN) > max dt(FP); first arg-max pixel in row-major
  order; clicks at pixel centres). Previous logits are not fed back unless stated in the config.
- A sequence stops at the target IoU (the largest NoC threshold) or after the click budget.
  NoC@t: 1-based click index reaching IoU >= t, else the budget; NoF@t: instances never
  reaching t; 1-IoU: mean IoU after the first click. IoU ignores pixels labelled -1.
- granularity: per-instance search over g = 0.1..1.0 (fewest clicks, ties: higher first-click
  IoU, then smaller g). granularity-oracle: per click, the best-IoU mask of all g.
  sam2-best-of-3: per click, the best-IoU of SAM-2's three masks. sam2-single: SAM-2's
  single-mask output.
- AR@1000: class-agnostic COCO mask evaluation (pycocotools, useCats 0, maxDets 1/10/1000,
  images with predictions only), predictions pooled over g = 0.1..1.0, ranked by predicted IoU,
  top 1000 per image."""


@dataclass(frozen=True)
class ReportPaths:
    """Files written by `write_report`."""

    markdown: Path
    json: Path
    plots: tuple[Path, ...]


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _finite(value: Any) -> Any:
    """Return JSON-safe values (NaN and infinities as None)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def build_payload(
    interactive: Sequence[InteractiveResult],
    ar: ARResult | None = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    with_instances: bool = True,
) -> dict[str, Any]:
    """Return the JSON report as a dict (NaN written as null)."""
    payload = {
        "metadata": dict(metadata or {}),
        "interactive": [r.to_dict(with_instances=with_instances) for r in interactive],
        "ar1000": ar.to_dict() if ar is not None else None,
    }
    return _finite(payload)  # type: ignore[no-any-return]


def _results_table(interactive: Sequence[InteractiveResult]) -> list[str]:
    if not interactive:
        return ["No interactive evaluation was run."]
    names = list(interactive[0].summary.noc) + list(interactive[0].summary.nof)
    checkpoints = [k for k in (1, 3, 5, 10, 20) if k <= interactive[0].config.max_clicks]
    header = ["method", "instances", *names, "1-IoU", *(f"mIoU@{k}" for k in checkpoints)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in interactive:
        s = r.summary
        cells = [r.method, str(s.count)]
        cells += [_fmt(s.noc[n], 2) for n in s.noc] + [str(s.nof[n]) for n in s.nof]
        cells += [_fmt(s.one_click_iou)] + [_fmt(s.miou_curve[k - 1]) for k in checkpoints]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _granularity_lines(interactive: Sequence[InteractiveResult]) -> list[str]:
    lines: list[str] = []
    for r in interactive:
        if r.method != "granularity" or not r.instances:
            continue
        counts = Counter(i.chosen_granularity for i in r.instances)
        lines += ["", "Granularity chosen per instance (per-instance search):", ""]
        lines += ["| g | instances |", "|---|---|"]
        lines += [f"| {g:.1f} | {counts[g]} |" for g in sorted(c for c in counts if c is not None)]
    return lines


def _ar_lines(ar: ARResult | None) -> list[str]:
    if ar is None:
        return []
    lines = ["", "## Whole image (class-agnostic AR@1000)", ""]
    lines.append(
        f"AR@1000 = **{ar.ar1000:.3f}** over {ar.images} images ({ar.gt_masks} gt masks, "
        f"{ar.predictions} predictions; {ar.images_without_predictions} images without "
        "predictions)."
    )
    lines += ["", "| statistic | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in ar.stats.items()]
    return lines


def render_markdown(
    interactive: Sequence[InteractiveResult],
    ar: ARResult | None = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    plots: Sequence[str] = (),
) -> str:
    """Return the markdown report (plots are linked by relative file name)."""
    lines = ["# UnSAMv2 evaluation", ""]
    if metadata:
        lines += ["| setting | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in metadata.items()]
        lines.append("")
    lines += ["## Interactive segmentation", "", *_results_table(interactive)]
    lines += _granularity_lines(interactive)
    lines += _ar_lines(ar)
    if plots:
        lines += ["", "## Charts", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    lines += ["", "## Protocol", "", _PROTOCOL, ""]
    return "\n".join(lines)


def write_plots(out_dir: Path, interactive: Sequence[InteractiveResult]) -> tuple[Path, ...]:
    """Write the mIoU-vs-clicks and NoC charts as PNG; returns their paths (none if no result)."""
    if not interactive:
        return ()
    curves = {r.method: list(r.summary.miou_curve) for r in interactive}
    miou = line_chart(curves, title="mIoU vs number of clicks", x_label="clicks", y_label="mIoU")
    names = list(interactive[0].summary.noc)
    bars = bar_chart(
        names,
        {r.method: [r.summary.noc[n] for n in names] for r in interactive},
        title="Mean number of clicks (lower is better)",
        y_label="NoC",
    )
    paths = (out_dir / MIOU_PLOT, out_dir / NOC_PLOT)
    miou.save(paths[0])
    bars.save(paths[1])
    return paths


def write_report(
    out_dir: str | Path,
    interactive: Sequence[InteractiveResult],
    ar: ARResult | None = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    with_instances: bool = True,
) -> ReportPaths:
    """Write report.json, report.md and the charts into `out_dir` (created if missing).

    Args:
        out_dir: Output folder.
        interactive: One result per evaluated method.
        ar: AR@1000 result, or None.
        metadata: Dataset, model, checkpoint, ... (shown first, stored in the JSON).
        with_instances: Store per-instance sequences in the JSON.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(out, interactive)
    payload = build_payload(interactive, ar, metadata=metadata, with_instances=with_instances)
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    markdown = render_markdown(interactive, ar, metadata=metadata, plots=[p.name for p in plots])
    md_path.write_text(markdown)
    return ReportPaths(markdown=md_path, json=json_path, plots=plots)
