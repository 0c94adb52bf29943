"""Playground images: uploads, a local folder's files, Label Studio tasks, and those opened.

Every image is stored once in the content-addressed image cache (``data/images``) and known to
the playground by the sha256 of its file, which is also its embedding cache key (the same key
/predict uses, so a task image opened here and clicked in Label Studio is encoded once). Only
images opened through the playground are served back to the page.

Folder files are offered by name: the listing holds the regular image files directly inside the
folder (no sub-folders, no hidden files, nothing whose real path leaves the folder), and a file is
opened only by a name of that listing, so a request never builds a path.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from core_model.imageio import load_image_rgb
from labeling_pipeline.label_studio.config import parse_label_config
from labeling_pipeline.store import NotFoundError
from labeling_pipeline.store.images import cache_image_bytes, cache_image_file
from ml_backend.errors import BadRequestError
from ml_backend.label_studio.context import BackendContext

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
MAX_LISTED_FILES = 1000
"""Files offered from the folder (sorted by name; the rest are left out with a warning)."""
MAX_OPENED_IMAGES = 256
"""Images the playground remembers (least recently used first out; reopen to use again)."""


@dataclass(frozen=True)
class OpenedImage:
    """An image the page may use.

    Attributes:
        sha256: Hex sha256 of the file (the image id on the page).
        path: The file in the image cache.
        name: A name to show and to name downloads with (no folder).
    """

    sha256: str
    path: Path
    name: str

    @property
    def key(self) -> str:
        """Embedding cache key (as /predict's task images)."""
        return f"file:{self.sha256}"


def folder_listing(folder: Path | None, files: Iterable[Path] = ()) -> dict[str, Path]:
    """Return {name: path} of the images offered: `files`, then the folder's image files.

    Args:
        folder: The playground folder (``UNSAMV2_PLAYGROUND_DIR``), or None.
        files: Single files (``unsamv2 playground IMAGE...``), offered by their base names
            (``name (2).png`` for a repeated name).
    """
    listing: dict[str, Path] = {}
    for path in files:
        name, stem, number = path.name, path.stem, 2
        while name in listing:
            name, number = f"{stem} ({number}){path.suffix}", number + 1
        listing[name] = path
    if folder is None:
        return listing
    try:
        base = folder.resolve(strict=True)
        entries = sorted(base.iterdir())
    except OSError as exc:
        logger.warning("cannot list the playground folder: %s", exc.strerror or exc)
        return listing
    for path in entries:
        if len(listing) >= MAX_LISTED_FILES:
            logger.warning("the playground folder lists only its first %d files", MAX_LISTED_FILES)
            break
        if _offered(path, base) and path.name not in listing:
            listing[path.name] = path
    return listing


def _offered(path: Path, base: Path) -> bool:
    if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
        return False
    try:
        real = path.resolve(strict=True)
    except OSError:
        return False
    return real.parent == base and real.is_file()


class PlaygroundImages:
    """The playground's image sources and the images opened through them.

    Args:
        context: The backend's shared state (settings, image cache, Label Studio client).
        files: Single files offered besides the folder's.
    """

    def __init__(self, context: BackendContext, files: Iterable[Path] = ()) -> None:
        self.context = context
        self.files = tuple(Path(f) for f in files)
        self._opened: OrderedDict[str, OpenedImage] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def _images_dir(self) -> Path:
        return self.context.settings.pipeline.images_dir

    @property
    def _max_pixels(self) -> int:
        return self.context.settings.max_image_pixels

    def listing(self) -> dict[str, Path]:
        """Return {name: path} of the files offered now (see `folder_listing`)."""
        return folder_listing(self.context.settings.playground_dir, self.files)

    def _remember(self, image: OpenedImage) -> OpenedImage:
        with self._lock:
            self._opened[image.sha256] = image
            self._opened.move_to_end(image.sha256)
            while len(self._opened) > MAX_OPENED_IMAGES:
                self._opened.popitem(last=False)
        return image

    def get(self, sha256: str) -> OpenedImage:
        """Return an opened image by id.

        Raises:
            NotFoundError: not opened through the playground (or forgotten since).
        """
        with self._lock:
            image = self._opened.get(sha256)
        if image is None or not image.path.is_file():
            raise NotFoundError("no such image: open it in the playground first")
        return image

    def pixels(self, image: OpenedImage) -> npt.NDArray[np.uint8]:
        """Return the (H, W, 3) uint8 RGB pixels (EXIF orientation applied)."""
        return load_image_rgb(image.path, max_pixels=self._max_pixels)

    def upload(self, data: bytes, filename: str) -> OpenedImage:
        """Store an uploaded file.

        Raises:
            InvalidImageError: not an image, or too many pixels.
        """
        cached = cache_image_bytes(data, self._images_dir, max_pixels=self._max_pixels)
        return self._remember(OpenedImage(cached.sha256, cached.path, _display_name(filename)))

    def open_file(self, name: str) -> OpenedImage:
        """Open a file of the listing by its name.

        Raises:
            NotFoundError: no such name in the listing.
            InvalidImageError: not an image, or too many pixels.
        """
        path = self.listing().get(name)
        if path is None:
            raise NotFoundError(f"no file named {name[:80]!r} in the playground's list")
        cached = cache_image_file(path, self._images_dir, max_pixels=self._max_pixels)
        return self._remember(OpenedImage(cached.sha256, cached.path, name))

    def open_task(self, task_id: int) -> OpenedImage:
        """Open the first image of a Label Studio task (fetched as /predict fetches it).

        Raises:
            BadRequestError: no Label Studio is configured, or the task has no image.
            LabelStudioError, ImageFetchError, InvalidImageError: the task or its image cannot
                be had.
        """
        client = self.context.ls_client()
        if client is None:
            raise BadRequestError(
                "no Label Studio is configured: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY"
            )
        task = client.get_json(f"/api/tasks/{int(task_id)}")
        project_id = task.get("project") if isinstance(task, dict) else None
        if not isinstance(project_id, int) or isinstance(project_id, bool):
            raise BadRequestError(f"Label Studio's task {task_id} names no project")
        config = parse_label_config(str(client.get_project(project_id).get("label_config", "")))
        _, data_key = config.first_image()
        data = task.get("data")
        url = data.get(data_key) if isinstance(data, dict) else None
        if not isinstance(url, str) or not url:
            raise BadRequestError(f"task {task_id} has no image under data.{data_key}")
        key, _ = self.context.images.resolve(url, client=client)
        sha256 = key.removeprefix("file:")
        path = next(
            (p for p in (self._images_dir / sha256[:2]).glob(f"{sha256}.*") if p.is_file()), None
        )
        if path is None:
            raise NotFoundError(f"the image of task {task_id} left the image cache; open it again")
        return self._remember(OpenedImage(sha256, path, f"task-{task_id}"))


def _display_name(filename: str) -> str:
    """A file name safe to show and to name downloads with: its last component, printable."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:100].strip()
    return name or "upload"
