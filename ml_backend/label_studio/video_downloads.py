"""Task videos downloaded once and kept on disk for the next requests on the same clip.

Label Studio sends /predict for every label change of a video box and every "Retrieve
predictions", each over the same task video. `VideoDownloads` keeps the downloaded files in a
private folder of the process (``<data dir>/video-cache/process-*``, mode 0700):

* keyed like task images, by (Label Studio origin, task URL): a relative path such as
  ``/data/upload/1/clip.mp4`` names another file on another Label Studio, so a copy fetched
  from one host is never served for another;
* at most ``max_bytes`` of kept copies (``UNSAMV2_VIDEO_CACHE_MB``), the least recently used
  evicted first; a video larger than the whole cache is used from a temporary file deleted
  after the request and not kept, and ``max_bytes=0`` turns the cache off (every request
  downloads into a temporary file);
* a copy older than `TTL_S` is downloaded again;
* single flight: concurrent requests for one video download it once, the others wait;
* a file in use by a request is never deleted under it: eviction skips copies in use, and a
  copy that expires while in use (or found no room) is deleted when its last user is done.

Each process locks (fcntl) its own folder while it runs; the folders of processes that no
longer run are deleted when a cache is created.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from labeling_pipeline.label_studio.client import LabelStudioClient
from labeling_pipeline.label_studio.fetch_rules import Origin

logger = logging.getLogger(__name__)

TTL_S = 3600.0
"""Age after which a kept copy is downloaded again. A task's file can change under the same URL
(a re-synced cloud storage object, a re-uploaded file), so a copy is trusted for about one
annotation session on a clip, not for the life of the process."""

STALE_CLAIM_S = 60.0
"""Age after which an unfinished folder claim (a process that died while creating its folder)
is deleted."""

_LOCK_NAME = ".lock"
VideoKey = tuple[Origin | None, str]


def video_key(url: str, client: LabelStudioClient | None) -> VideoKey:
    """Return the cache key of a task video URL: (Label Studio origin or None, URL).

    The same key as task images use (`TaskImages.resolve`): it changes with the Label Studio
    host, so one host's URL never finds a file fetched from another.
    """
    return (client.origin if client is not None else None, url)


@dataclass(eq=False)
class _Entry:
    path: Path
    size: int
    fetched_at: float
    users: int = 1
    kept: bool = True  # False once evicted, or when it found no room: deleted when unused


class VideoDownloads:
    """A bounded, thread-safe on-disk cache of downloaded task videos (see the module docstring).

    Args:
        root: Folder holding the process folders (created with mode 0700).
        max_bytes: Total size of the kept copies; 0 keeps nothing and creates no folder.
        ttl_s: Age after which a copy is downloaded again.
        clock: Monotonic clock in seconds (replaceable in tests).
    """

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int,
        ttl_s: float = TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be 0 (no cache) or more, got {max_bytes}")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[VideoKey, _Entry] = OrderedDict()
        self._loading: set[VideoKey] = set()
        self._bytes = 0
        self._cond = threading.Condition()
        self._folder: Path | None = None
        self._lock_file: IO[bytes] | None = None
        if max_bytes:
            self._folder, self._lock_file = _claim_folder(root)

    @property
    def kept_bytes(self) -> int:
        """Total size of the kept copies."""
        with self._cond:
            return self._bytes

    def __contains__(self, key: object) -> bool:
        """Whether a copy of `key` is kept (fresh or not)."""
        with self._cond:
            return key in self._entries

    @contextlib.contextmanager
    def open(
        self, key: VideoKey, fetch: Callable[[], bytes], *, suffix: str = ".mp4"
    ) -> Iterator[Path]:
        """Yield a local file of the video `key`, calling `fetch` when no fresh copy is kept.

        Args:
            key: The video's key (`video_key`).
            fetch: Downloads the video's bytes (its errors propagate).
            suffix: File name suffix of a new copy (decoders look at it).
        """
        entry = self._acquire(key) if self._folder is not None else None
        if entry is None:
            data = self._download(key, fetch)
            entry = self._store(key, data, suffix)
            if entry is None:  # not kept: the cache is off, or the video is larger than it
                with tempfile.TemporaryDirectory(prefix="unsamv2-video-") as folder:
                    path = Path(folder) / f"video{suffix}"
                    path.write_bytes(data)
                    del data
                    yield path
                return
            del data
        try:
            yield entry.path
        finally:
            self._release(entry)

    def close(self) -> None:
        """Delete the process folder and its copies (only when no request uses them)."""
        with self._cond:
            self._entries.clear()
            self._bytes = 0
            folder, lock_file, self._folder, self._lock_file = (
                self._folder,
                self._lock_file,
                None,
                None,
            )
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        if lock_file is not None:
            lock_file.close()

    def _acquire(self, key: VideoKey) -> _Entry | None:
        """Return a fresh kept copy (now in use), or None when the caller must download it."""
        with self._cond:
            while True:
                entry = self._entries.get(key)
                if entry is not None and self._clock() - entry.fetched_at >= self.ttl_s:
                    self._evict(key)
                    entry = None
                if entry is not None:
                    entry.users += 1
                    self._entries.move_to_end(key)
                    return entry
                if key not in self._loading:
                    self._loading.add(key)
                    return None
                self._cond.wait()  # another request downloads it

    def _download(self, key: VideoKey, fetch: Callable[[], bytes]) -> bytes:
        try:
            return fetch()
        except BaseException:
            self._done_loading(key)
            raise

    def _store(self, key: VideoKey, data: bytes, suffix: str) -> _Entry | None:
        """Write a downloaded video into the folder and keep it if there is room."""
        if self._folder is None:
            return None
        try:
            if len(data) > self.max_bytes:
                return None
            handle, name = tempfile.mkstemp(suffix=suffix, dir=self._folder)
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(data)
            except BaseException:
                Path(name).unlink(missing_ok=True)
                raise
            entry = _Entry(Path(name), len(data), self._clock())
            with self._cond:
                self._make_room(len(data))
                if self._bytes + entry.size <= self.max_bytes:
                    self._entries[key] = entry
                    self._bytes += entry.size
                else:  # the room is taken by copies in use: this one goes after the request
                    entry.kept = False
            return entry
        finally:
            self._done_loading(key)

    def _done_loading(self, key: VideoKey) -> None:
        with self._cond:
            self._loading.discard(key)
            self._cond.notify_all()

    def _make_room(self, size: int) -> None:
        """Evict expired copies, then the least recently used, until `size` fits (lock held)."""
        now = self._clock()
        for key, entry in list(self._entries.items()):
            expired = now - entry.fetched_at >= self.ttl_s
            if entry.users == 0 and (expired or self._bytes + size > self.max_bytes):
                self._evict(key)

    def _evict(self, key: VideoKey) -> None:
        """Forget a kept copy; delete its file now, or when its last user is done (lock held)."""
        entry = self._entries.pop(key)
        self._bytes -= entry.size
        entry.kept = False
        if entry.users == 0:
            _delete(entry.path)

    def _release(self, entry: _Entry) -> None:
        with self._cond:
            entry.users -= 1
            if entry.users == 0 and not entry.kept:
                _delete(entry.path)


def _delete(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("cannot delete the cached video %s: %s", path, exc)


def _claim_folder(root: Path) -> tuple[Path, IO[bytes]]:
    """Create and lock this process's folder under `root`, deleting dead processes' folders.

    The folder is created as ``.claim-*``, locked, then renamed to ``process-*``, so a
    ``process-*`` folder whose lock is free belongs to a process that no longer runs.
    """
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    root.chmod(0o700)
    _remove_leftovers(root)
    claim = Path(tempfile.mkdtemp(prefix=".claim-", dir=root))  # mode 0700
    lock_file = open(claim / _LOCK_NAME, "wb")  # noqa: SIM115 (held for the process's life)
    fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    folder = root / f"process-{claim.name.removeprefix('.claim-')}"
    claim.rename(folder)
    logger.info("task videos are cached in %s", folder)
    return folder, lock_file


def _remove_leftovers(root: Path) -> None:
    for folder in root.iterdir():
        if folder.name.startswith("process-") and folder.is_dir():
            if not _owner_alive(folder):
                shutil.rmtree(folder, ignore_errors=True)
        elif folder.name.startswith(".claim-") and folder.is_dir():
            with contextlib.suppress(OSError):
                if time.time() - folder.stat().st_mtime > STALE_CLAIM_S:
                    shutil.rmtree(folder, ignore_errors=True)


def _owner_alive(folder: Path) -> bool:
    try:
        with open(folder / _LOCK_NAME, "rb") as lock_file:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False  # the lock is released when the file closes
    except OSError:  # no lock file: not a folder of a running process
        return False
