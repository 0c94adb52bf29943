"""Smart boxes remembered per (task, annotator), to combine with later clicks.

Label Studio sends a smart rectangle and smart keypoints in separate requests (a group holds one
region type), so a "box + clicks" prompt needs the box from an earlier request. Entries expire
after `ttl_s` and the table is bounded.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class RememberedBox:
    """A box in percent of the image, with the BrushLabels label it was drawn for."""

    box_pct: tuple[float, float, float, float]
    target: str
    at: float


class PromptMemory:
    """Thread-safe, bounded, expiring map (task id, annotator) -> last smart box."""

    def __init__(self, *, ttl_s: float = 3600.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
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
        self, task: str, annotator: str, target: str
    ) -> tuple[float, float, float, float] | None:
        """Return the remembered box for clicks of the same target label, if still fresh."""
        with self._lock:
            entry = self._boxes.get((task, annotator))
            if entry is None or time.monotonic() - entry.at > self.ttl_s:
                self._boxes.pop((task, annotator), None)
                return None
            return entry.box_pct if entry.target == target else None

    def forget(self, task: str, annotator: str) -> None:
        """Drop the box (e.g. after the annotation is submitted)."""
        with self._lock:
            self._boxes.pop((task, annotator), None)
