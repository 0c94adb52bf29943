"""The on-disk cache of downloaded task videos: hits, bounds, expiry, single flight, leases."""

from __future__ import annotations

import fcntl
import stat
import threading
from pathlib import Path

import pytest

from labeling_pipeline.label_studio.client import LabelStudioClient
from ml_backend.label_studio.video_downloads import VideoDownloads, video_key
from ml_backend.settings import Settings, SettingsError

KEY_A = (None, "http://127.0.0.1:1/a.mp4")
KEY_B = (None, "http://127.0.0.1:1/b.mp4")
KEY_C = (None, "http://127.0.0.1:1/c.mp4")


class Fetches:
    """Fetch functions returning fixed bytes, counting their calls per key."""

    def __init__(self) -> None:
        self.calls: dict[object, int] = {}

    def of(self, key: object, data: bytes):
        def fetch() -> bytes:
            self.calls[key] = self.calls.get(key, 0) + 1
            return data

        return fetch


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cache(tmp_path):
    downloads = VideoDownloads(tmp_path / "video-cache", max_bytes=10, ttl_s=100.0, clock=Clock())
    yield downloads
    downloads.close()


def read(cache: VideoDownloads, key, fetch) -> tuple[Path, bytes]:
    with cache.open(key, fetch) as path:
        return path, path.read_bytes()


def test_second_open_is_a_hit_without_download(cache) -> None:
    fetches = Fetches()
    first, data = read(cache, KEY_A, fetches.of(KEY_A, b"aaaa"))
    second, again = read(cache, KEY_A, fetches.of(KEY_A, b"new!"))
    assert (data, again) == (b"aaaa", b"aaaa")
    assert first == second and first.is_file()
    assert fetches.calls == {KEY_A: 1}
    _, other = read(cache, KEY_B, fetches.of(KEY_B, b"bb"))  # a miss downloads
    assert other == b"bb" and fetches.calls[KEY_B] == 1
    assert cache.kept_bytes == 6


def test_folder_is_private_to_the_process(cache, tmp_path) -> None:
    path, _ = read(cache, KEY_A, Fetches().of(KEY_A, b"aaaa"))
    assert stat.S_IMODE((tmp_path / "video-cache").stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.parent.parent == tmp_path / "video-cache"
    assert path.suffix == ".mp4"


def test_least_recently_used_is_evicted_by_size(cache) -> None:
    fetches = Fetches()
    path_a, _ = read(cache, KEY_A, fetches.of(KEY_A, b"a" * 4))
    path_b, _ = read(cache, KEY_B, fetches.of(KEY_B, b"b" * 4))
    read(cache, KEY_A, fetches.of(KEY_A, b"a" * 4))  # A is now the most recently used
    read(cache, KEY_C, fetches.of(KEY_C, b"c" * 4))  # 12 > 10 bytes: B goes
    assert KEY_A in cache and KEY_C in cache and KEY_B not in cache
    assert path_a.is_file() and not path_b.exists()
    assert cache.kept_bytes == 8
    read(cache, KEY_B, fetches.of(KEY_B, b"b" * 4))
    assert fetches.calls == {KEY_A: 1, KEY_B: 2, KEY_C: 1}


def test_expired_copy_is_downloaded_again(tmp_path) -> None:
    clock = Clock()
    cache = VideoDownloads(tmp_path, max_bytes=10, ttl_s=100.0, clock=clock)
    fetches = Fetches()
    old, _ = read(cache, KEY_A, fetches.of(KEY_A, b"v1"))
    clock.now = 99.0
    assert read(cache, KEY_A, fetches.of(KEY_A, b"v2"))[1] == b"v1"
    clock.now = 100.0
    new, data = read(cache, KEY_A, fetches.of(KEY_A, b"v2"))
    assert data == b"v2" and fetches.calls == {KEY_A: 2}
    assert not old.exists() and new.is_file()
    cache.close()


def test_concurrent_requests_download_once(cache) -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow_fetch() -> bytes:
        calls.append(threading.current_thread().name)
        started.set()
        assert release.wait(30)
        return b"video"

    results: dict[str, bytes] = {}

    def request(name: str) -> None:
        with cache.open(KEY_A, slow_fetch) as path:
            results[name] = path.read_bytes()

    first = threading.Thread(target=request, args=("first",), name="first")
    first.start()
    assert started.wait(30)
    second = threading.Thread(target=request, args=("second",), name="second")
    second.start()
    # CPython's Condition lists its waiting threads in _waiters: wait until the second waits
    for _ in range(3000):
        if cache._cond._waiters:
            break
        threading.Event().wait(0.01)
    assert cache._cond._waiters, "the second request should wait for the first's download"
    release.set()
    first.join(30)
    second.join(30)
    assert calls == ["first"]
    assert results == {"first": b"video", "second": b"video"}


def test_failed_download_lets_the_next_request_try(cache) -> None:
    def broken() -> bytes:
        raise OSError("unreachable")

    with pytest.raises(OSError, match="unreachable"), cache.open(KEY_A, broken):
        pass
    fetches = Fetches()
    assert read(cache, KEY_A, fetches.of(KEY_A, b"ok"))[1] == b"ok"
    assert fetches.calls == {KEY_A: 1}


def test_copy_in_use_is_not_deleted(tmp_path) -> None:
    clock = Clock()
    cache = VideoDownloads(tmp_path, max_bytes=10, ttl_s=100.0, clock=clock)
    fetches = Fetches()
    with cache.open(KEY_A, fetches.of(KEY_A, b"a" * 6)) as in_use:
        # B needs A's room, but A is in use: A stays, B is used and not kept
        with cache.open(KEY_B, fetches.of(KEY_B, b"b" * 6)) as path_b:
            assert path_b.read_bytes() == b"b" * 6
        assert not path_b.exists() and KEY_B not in cache
        assert in_use.read_bytes() == b"a" * 6 and KEY_A in cache
        # A expires while in use: the next request downloads it again, this file stays
        clock.now = 100.0
        with cache.open(KEY_A, fetches.of(KEY_A, b"A" * 6)) as renewed:
            assert renewed != in_use and renewed.read_bytes() == b"A" * 6
        assert in_use.read_bytes() == b"a" * 6
    assert not in_use.exists()  # deleted when its last user was done
    assert renewed.is_file() and cache.kept_bytes == 6
    assert fetches.calls == {KEY_A: 2, KEY_B: 1}
    cache.close()


def test_video_larger_than_the_cache_is_not_kept(cache) -> None:
    fetches = Fetches()
    with cache.open(KEY_A, fetches.of(KEY_A, b"x" * 11)) as path:
        assert path.read_bytes() == b"x" * 11
        assert cache.kept_bytes == 0
    assert not path.exists() and KEY_A not in cache
    read(cache, KEY_A, fetches.of(KEY_A, b"x" * 11))
    assert fetches.calls == {KEY_A: 2}


def test_zero_disables_the_cache(tmp_path) -> None:
    cache = VideoDownloads(tmp_path / "video-cache", max_bytes=0)
    fetches = Fetches()
    with cache.open(KEY_A, fetches.of(KEY_A, b"data")) as path:
        assert path.read_bytes() == b"data"
    assert not path.exists()
    read(cache, KEY_A, fetches.of(KEY_A, b"data"))
    assert fetches.calls == {KEY_A: 2}
    assert not (tmp_path / "video-cache").exists()


def test_keys_differ_between_label_studio_hosts(cache) -> None:
    url = "/data/upload/1/clip.mp4"
    first = LabelStudioClient("http://127.0.0.1:8080", "token")
    second = LabelStudioClient("http://127.0.0.1:8081", "token")
    keys = {video_key(url, first), video_key(url, second), video_key(url, None)}
    assert len(keys) == 3
    assert video_key(url, first) == video_key(url, LabelStudioClient("http://127.0.0.1:8080", "t"))
    fetches = Fetches()
    assert read(cache, video_key(url, first), fetches.of(1, b"one"))[1] == b"one"
    assert read(cache, video_key(url, second), fetches.of(2, b"two"))[1] == b"two"
    assert fetches.calls == {1: 1, 2: 1}


def test_leftovers_of_stopped_processes_are_removed(tmp_path) -> None:
    root = tmp_path / "video-cache"
    running = VideoDownloads(root, max_bytes=10)
    live, _ = read(running, KEY_A, Fetches().of(KEY_A, b"live"))
    dead = root / "process-dead"
    dead.mkdir()
    (dead / ".lock").touch()
    (dead / "tmp1.mp4").write_bytes(b"old")
    with open(dead / ".lock", "rb") as lock_file:  # held by a "running" process: kept
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        VideoDownloads(root, max_bytes=10).close()
        assert dead.is_dir()
    restarted = VideoDownloads(root, max_bytes=10)
    assert not dead.exists()
    assert live.is_file()  # the running cache's folder is locked: kept
    restarted.close()
    running.close()
    assert list(root.iterdir()) == []


def test_setting_is_validated() -> None:
    assert Settings.from_env({}).video_cache_mb == 1024
    assert Settings.from_env({"UNSAMV2_VIDEO_CACHE_MB": "0"}).video_cache_mb == 0
    with pytest.raises(SettingsError, match="UNSAMV2_VIDEO_CACHE_MB"):
        Settings.from_env({"UNSAMV2_VIDEO_CACHE_MB": "-1"})
    with pytest.raises(ValueError, match="max_bytes"):
        VideoDownloads(Path("unused"), max_bytes=-1)
