"""Task images for the backend: fetched once, cached by content, decoded only when needed.

A task's image URL maps (in memory) to the sha256 of its file, which keys both the on-disk cache
(``data/images``) and the embedding cache: a click on an image whose embedding is cached needs no
download and no decoding. The map is keyed by (Label Studio origin, URL): a relative path such as
``/data/upload/1/x.png`` names another file on another Label Studio, so a change of host never
serves a file fetched from the previous one (and `forget_host` drops that host's entries).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from core_model.imageio import load_image_rgb
from labeling_pipeline.label_studio.client import LabelStudioClient
from labeling_pipeline.label_studio.fetch import FetchPolicy, fetch_task_image
from labeling_pipeline.label_studio.fetch_rules import Origin
from labeling_pipeline.store.images import cache_image_bytes

_MAX_URLS = 10_000
_Key = tuple[Origin | None, str]


class TaskImages:
    """Resolve task image URLs to a content key and a lazy pixel loader.

    Args:
        images_dir: On-disk content-addressed cache.
        policy: What may be fetched, and size limits.
        max_pixels: Largest image decoded.
    """

    def __init__(self, images_dir: Path, policy: FetchPolicy, *, max_pixels: int) -> None:
        self.images_dir = images_dir
        self.policy = policy
        self.max_pixels = max_pixels
        self._paths: OrderedDict[_Key, tuple[str, Path]] = OrderedDict()
        self._lock = threading.Lock()

    def _known(self, key: _Key) -> tuple[str, Path] | None:
        with self._lock:
            entry = self._paths.get(key)
            if entry is not None:
                self._paths.move_to_end(key)
        if entry is not None and entry[1].is_file():
            return entry
        return None

    def forget_host(self, origin: Origin | None) -> None:
        """Drop every URL mapping made while `origin` was the Label Studio host."""
        with self._lock:
            for key in [key for key in self._paths if key[0] == origin]:
                del self._paths[key]

    def resolve(
        self, url: str, *, client: LabelStudioClient | None
    ) -> tuple[str, Callable[[], npt.NDArray[np.uint8]]]:
        """Return ("file:<sha256>", loader of (H, W, 3) uint8 RGB) for a task image URL.

        Raises:
            ImageFetchError: the URL is refused or the download fails.
            InvalidImageError: the file is not a usable image.
        """
        key = (client.origin if client is not None else None, url)
        entry = self._known(key)
        if entry is None:
            data = fetch_task_image(url, client=client, policy=self.policy)
            cached = cache_image_bytes(data, self.images_dir, max_pixels=self.max_pixels)
            entry = (cached.sha256, cached.path)
            with self._lock:
                self._paths[key] = entry
                while len(self._paths) > _MAX_URLS:
                    self._paths.popitem(last=False)
        sha256, path = entry
        return f"file:{sha256}", lambda: load_image_rgb(path, max_pixels=self.max_pixels)
