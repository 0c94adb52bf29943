"""A COCO instance-segmentation file written as a stream.

Images and annotations are appended as JSON lines to two temporary files next to the output
while the export runs (nothing is kept in memory); `CocoWriter.finish` copies them, line by
line, into the final document and renames it into place, so a reader sees either no file or a
complete one. Categories are given at the end, so they may be collected while exporting.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from labeling_pipeline.export.errors import ExportError


class CocoWriter:
    """Stream images and annotations into one COCO JSON file.

    Args:
        path: The COCO file to write (its folder must exist).
        info: The ``info`` entry.

    Use as a context manager: leaving the block with an exception removes the temporary files
    and leaves no output; call `finish` inside the block to write the file.
    """

    def __init__(self, path: Path, *, info: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.info = dict(info)
        self.images = 0
        self.annotations = 0
        try:
            self._work = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=".coco-"))
            self._images: TextIO = open(self._work / "images.jsonl", "w", encoding="utf-8")  # noqa: SIM115
            self._annotations: TextIO = open(  # noqa: SIM115
                self._work / "annotations.jsonl", "w", encoding="utf-8"
            )
        except OSError as exc:
            raise ExportError(f"cannot write next to {self.path}: {exc}") from None

    def add_image(self, image: Mapping[str, Any]) -> None:
        """Append one ``images`` entry (id, file_name, width, height, ...)."""
        self._images.write(json.dumps(image, separators=(",", ":")) + "\n")
        self.images += 1

    def add_annotation(self, annotation: Mapping[str, Any]) -> None:
        """Append one ``annotations`` entry."""
        self._annotations.write(json.dumps(annotation, separators=(",", ":")) + "\n")
        self.annotations += 1

    def finish(self, categories: Sequence[Mapping[str, Any]]) -> Path:
        """Assemble the document with these categories; return its path."""
        self._images.close()
        self._annotations.close()
        partial = self._work / "coco.json"
        try:
            with open(partial, "w", encoding="utf-8") as out:
                out.write('{"info":' + json.dumps(self.info) + ',"licenses":[],"categories":')
                out.write(json.dumps(list(categories)) + ',\n"images":[\n')
                _copy_lines(self._work / "images.jsonl", out)
                out.write('],\n"annotations":[\n')
                _copy_lines(self._work / "annotations.jsonl", out)
                out.write("]}\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, self.path)
        except OSError as exc:
            raise ExportError(f"cannot write {self.path}: {exc}") from None
        finally:
            self.close()
        return self.path

    def close(self) -> None:
        """Remove the temporary files (the finished file stays)."""
        for stream in (self._images, self._annotations):
            stream.close()
        shutil.rmtree(self._work, ignore_errors=True)

    def __enter__(self) -> CocoWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with contextlib.suppress(OSError):
            self.close()


def _copy_lines(source: Path, out: TextIO) -> None:
    """Copy JSON lines as comma-separated array items."""
    with open(source, encoding="utf-8") as lines:
        first = True
        for line in lines:
            if not first:
                out.write(",\n")
            out.write(line.rstrip("\n"))
            first = False
    out.write("\n")
