"""Stream Label Studio tasks from a JSON export file or from a project's API.

Files are parsed incrementally with ``ijson`` (a declared dependency): one task is in memory at
a time, whatever the file's size. Without ``ijson`` the whole file is loaded with ``json``, and
only up to `FALLBACK_MAX_BYTES` (an error says to install ``ijson`` beyond that).

From the API, tasks are listed page by page (``GET /api/tasks?project=P&include=id``) and each
page is fetched with the ordinary JSON export restricted to its ids
(``GET /api/projects/P/export?exportType=JSON&ids[]=...``), so at most `page_size` tasks are in
memory and the records have the very shape of an exported file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from labeling_pipeline.export.errors import ExportError
from labeling_pipeline.label_studio.client import LabelStudioClient, LabelStudioError

FALLBACK_MAX_BYTES = 512 * 1024 * 1024
DEFAULT_PAGE_SIZE = 10


def ijson_module() -> Any:
    """Return the ``ijson`` module, or None when it is not installed."""
    try:
        import ijson  # type: ignore[import-untyped]
    except ImportError:
        return None
    return ijson


def load_json_bounded(path: Path, *, max_bytes: int | None = None) -> Any:
    """Load a whole JSON file, refusing files over `max_bytes` (default `FALLBACK_MAX_BYTES`).

    Raises:
        ExportError: unreadable, too large, or not JSON.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ExportError(f"cannot read {path}: {exc}") from None
    max_bytes = FALLBACK_MAX_BYTES if max_bytes is None else max_bytes
    if size > max_bytes:
        raise ExportError(
            f"{path} is {size} bytes, more than {max_bytes} to load at once (streaming "
            "needs the ijson package)"
        )
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except OSError as exc:
        raise ExportError(f"cannot read {path}: {exc}") from None
    except ValueError as exc:
        raise ExportError(f"{path} is not valid JSON: {exc}") from None


def iter_json_items(path: Path, prefix: str) -> Iterator[Any]:
    """Yield the items of the array at `prefix` of a JSON file (ijson prefix syntax).

    Args:
        path: The file.
        prefix: ``"item"`` for a top-level array, ``"images.item"`` for the ``images`` array of
            a top-level object, and so on.

    Raises:
        ExportError: unreadable file or invalid JSON (raised when the bad part is reached).
    """
    path = Path(path)
    ijson = ijson_module()
    if ijson is None:
        node: Any = load_json_bounded(path)
        for key in prefix.split(".")[:-1]:
            node = node.get(key, []) if isinstance(node, dict) else []
        yield from node if isinstance(node, list) else []
        return
    try:
        with open(path, "rb") as stream:
            yield from ijson.items(stream, prefix, use_float=True)
    except OSError as exc:
        raise ExportError(f"cannot read {path}: {exc}") from None
    except (ValueError, ijson.JSONError) as exc:
        raise ExportError(f"{path} is not valid JSON: {exc}") from None


def top_level_kind(path: Path) -> str:
    """Return ``"array"`` or ``"object"`` from the first non-blank byte of a JSON file."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError as exc:
        raise ExportError(f"cannot read {path}: {exc}") from None
    if head.startswith(b"["):
        return "array"
    if head.startswith(b"{"):
        return "object"
    raise ExportError(f"{path} is not a JSON array or object")


def iter_export_file(path: Path) -> Iterator[Any]:
    """Return an iterator over the tasks of a Label Studio JSON export file (one by one).

    Raises:
        ExportError: at once for a missing file or one that is not a list; later, when
            reached, for invalid JSON.
    """
    if top_level_kind(Path(path)) != "array":
        raise ExportError(
            f"{path} is not a Label Studio JSON export (a list of tasks); export with "
            "format JSON, not JSON_MIN or COCO"
        )
    return iter_json_items(Path(path), "item")


class ProjectTasks:
    """The tasks of a Label Studio project, streamed page by page (module docstring).

    Args:
        client: An authenticated client.
        project_id: Label Studio project id.
        page_size: Tasks fetched per request.
    """

    def __init__(
        self, client: LabelStudioClient, project_id: int, *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> None:
        if page_size < 1:
            raise ExportError(f"page_size must be >= 1, got {page_size}")
        self.client = client
        self.project_id = int(project_id)
        self.page_size = page_size
        self._first = self._page(1, "id")
        self.total = int(self._first.get("total") or 0)

    def _page(self, page: int, include: str) -> dict[str, Any]:
        answer = self.client.get_json(
            "/api/tasks",
            project=self.project_id,
            page=page,
            page_size=self.page_size,
            include=include,
        )
        if not isinstance(answer, dict) or not isinstance(answer.get("tasks"), list):
            raise LabelStudioError(f"unexpected task list of project {self.project_id}")
        return answer

    def listing(self, include: str = "id") -> Iterator[dict[str, Any]]:
        """Yield light task records (the fields in `include`, comma-separated) page by page."""
        for page in range(1, math.ceil(self.total / self.page_size) + 1):
            answer = self._first if page == 1 and include == "id" else self._page(page, include)
            yield from (t for t in answer["tasks"] if isinstance(t, dict))

    def __iter__(self) -> Iterator[Any]:
        batch: list[int] = []
        for task in self.listing("id"):
            if isinstance(task.get("id"), int):
                batch.append(task["id"])
            if len(batch) == self.page_size:
                yield from self._export(batch)
                batch = []
        if batch:
            yield from self._export(batch)

    def _export(self, ids: list[int]) -> list[Any]:
        tasks = self.client.get_json(
            f"/api/projects/{self.project_id}/export",
            exportType="JSON",
            download_all_tasks="true",
            **{"ids[]": ids},
        )
        if not isinstance(tasks, list):
            raise LabelStudioError(f"unexpected export of project {self.project_id}")
        return tasks
