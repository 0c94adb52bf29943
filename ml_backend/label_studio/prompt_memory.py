"""Smart boxes remembered per (task, annotator), to combine with later clicks.

Label Studio sends a smart rectangle and smart keypoints in separate requests (a group holds one
region type), so a "box + clicks" prompt needs the box from an earlier request. Entries expire
after `ttl_s` and the table is bounded.

A remembered box applies to later clicks only while every positive click lies inside it
(with a margin of `margin_pct`): a positive click outside means the annotator moved on to
another object, so the box is forgotten and no longer constrains any click. Negative clicks
may lie anywhere (they often mark background next to the box).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RememberedBox:
    """A box in percent of the image, with the BrushLabels label it was drawn for."""

    box_pct: tuple[float, float, float, float]
    target: str
    at: float


class PromptMemory:
    """Thread-safe, bounded, expiring map (task id, annotator) -> last smart box."""

    def __init__(
        self, *, ttl_s: float = 3600.0, max_entries: int = 10_000, margin_pct: float = 2.0
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.margin_pct = margin_pct
        self._boxes: OrderedDict[tuple[str, str], RememberedBox] = OrderedDict()
        self._lock = threading.Lock()

    def remember(
        self, task: str, annotator: str, box_pct: tuple[float, float, float, float], target: str
    ) -> None:
        """Store the latest box of an annotator on a task."""
        with self._lock:
            self._boxes[(task, annotator)] = RememberedBox(box_pct, target, time.monotonic())
            self._boxes.move_to_end((task, annotator))
            while len(self._boxes) > self.max_entries:
                self._boxes.popitem(last=False)

    def box_for(
        self,
        task: str,
        annotator: str,
        target: str,
        *,
        points_pct: Sequence[tuple[float, float, int]] = (),
    ) -> tuple[float, float, float, float] | None:
        """Return the remembered box for clicks of the same target label, if it still applies.

        Args:
            task: Task id.
            annotator: Annotator id.
            target: BrushLabels label of the clicks.
            points_pct: The clicks, (x, y, label) with x, y in percent of the image and label
                1 positive / 0 negative. A positive click outside the box (plus the margin)
                forgets the box.
        """
        with self._lock:
            entry = self._boxes.get((task, annotator))
            if entry is None or time.monotonic() - entry.at > self.ttl_s:
                self._boxes.pop((task, annotator), None)
                return None
            if entry.target != target:
                return None
            if not all(self._inside(entry.box_pct, x, y) for x, y, lab in points_pct if lab):
                del self._boxes[(task, annotator)]
                return None
            return entry.box_pct

    def _inside(self, box_pct: tuple[float, float, float, float], x: float, y: float) -> bool:
        x0, y0, x1, y1 = box_pct
        m = self.margin_pct
        return x0 - m <= x <= x1 + m and y0 - m <= y <= y1 + m

    def forget(self, task: str, annotator: str) -> None:
        """Drop the box (e.g. after the annotation is submitted)."""
        with self._lock:
            self._boxes.pop((task, annotator), None)
