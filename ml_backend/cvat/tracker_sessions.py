"""Server-side tracker sessions behind opaque, signed, expiring state keys.

A CVAT tracker keeps nothing between calls but the state string it returned for each shape.
Here that string is only a key: ``<session id>.<step>.<expiry>.<signature>``, where the session
id is random (16 bytes, URL-safe base64), the step counts the frames the session has tracked,
the expiry is a Unix time, and the signature is HMAC-SHA256 over the function name and the
other three fields with the process's secret (``UNSAMV2_CVAT_STATE_SECRET``). The key carries
no data a client could change to its advantage: a forged, tampered, expired or replayed key
(an older step of a session) finds no session, and the tracker starts again from the shape CVAT
sent with it instead of failing.

`SessionStore` holds the sessions: at most `max_sessions` (the least recently used is evicted
when a new one needs room), each dropped after `ttl_s` without use. The store's lock guards the
table only; each session has its own lock, held while the model tracks it, so two objects
are tracked by two threads in turn (model calls are serialised by the caller) and one object's
calls never interleave.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

S = TypeVar("S")

_SEPARATOR = "."
MAX_KEY_CHARS = 200


@dataclass(frozen=True)
class StateKey:
    """The fields of a verified state key.

    Attributes:
        session_id: The session's random id.
        step: Frames the session had tracked when the key was issued.
        expires_at: Unix time after which the key is refused.
    """

    session_id: str
    step: int
    expires_at: int


class StateSigner:
    """Issue and verify state keys of one function.

    Args:
        secret: Signing key; None makes a random one for this process (keys then do not
            survive a restart; a warning says so).
        clock: Unix time in seconds (tests pass their own).
    """

    def __init__(
        self, secret: str | bytes | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        if secret is None:
            logger.warning(
                "UNSAMV2_CVAT_STATE_SECRET is not set: CVAT tracker states are signed with a "
                "random key and do not survive a restart (tracking then restarts from the "
                "shape); set it to share states between processes"
            )
            secret = secrets.token_bytes(32)
        self._secret = secret.encode() if isinstance(secret, str) else bytes(secret)
        self.clock = clock

    def _signature(self, function: str, session_id: str, step: int, expires_at: int) -> str:
        message = f"{function}\n{session_id}\n{step}\n{expires_at}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def issue(self, function: str, session_id: str, step: int, ttl_s: float) -> str:
        """Return the key of a session at `step`, valid for `ttl_s` seconds from now."""
        expires_at = int(self.clock() + ttl_s) + 1
        signature = self._signature(function, session_id, step, expires_at)
        return _SEPARATOR.join((session_id, str(step), str(expires_at), signature))

    def verify(self, function: str, key: str) -> StateKey | None:
        """Return the fields of a genuine, unexpired key of `function`, else None."""
        parts = key.split(_SEPARATOR) if len(key) <= MAX_KEY_CHARS else []
        if len(parts) != 4 or not parts[1].isdigit() or not parts[2].isdigit():
            return None
        session_id, step, expires_at, signature = parts[0], int(parts[1]), int(parts[2]), parts[3]
        expected = self._signature(function, session_id, step, expires_at)
        if not hmac.compare_digest(expected, signature) or expires_at < self.clock():
            return None
        return StateKey(session_id, step, expires_at)


def new_session_id() -> str:
    """Return a random session id: 16 bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")


@dataclass(eq=False)
class Entry(Generic[S]):
    """A stored session and its bookkeeping.

    Attributes:
        session_id: Its id (the first field of its keys).
        function: The function that started it (a key of another function does not match).
        value: The session.
        step: Frames it has tracked; only the key of this step continues it.
        last_used: Monotonic time of its last use.
        lock: Held while the session runs.
    """

    session_id: str
    function: str
    value: S
    step: int = 0
    last_used: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class SessionStore(Generic[S]):
    """A bounded, expiring table of sessions.

    Args:
        max_sessions: Sessions kept at once (>= 1); a new one evicts the least recently used.
        ttl_s: Idle seconds after which a session is dropped (> 0).
        close: Called with a dropped session's value once no thread uses it.
        monotonic: Clock for idle times (tests pass their own).
    """

    def __init__(
        self,
        max_sessions: int,
        ttl_s: float,
        *,
        close: Callable[[S], None] = lambda value: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_sessions < 1 or ttl_s <= 0:
            raise ValueError(
                f"need max_sessions >= 1 and ttl_s > 0, got {max_sessions} and {ttl_s}"
            )
        self.max_sessions = max_sessions
        self.ttl_s = ttl_s
        self._close = close
        self._monotonic = monotonic
        self._entries: OrderedDict[str, Entry[S]] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, key: StateKey, function: str) -> Entry[S] | None:
        """Return the session a verified key continues, or None (unknown, evicted, expired).

        The caller must hold the entry's lock and check its `step` against ``key.step``
        under it (another call may have moved the session on).
        """
        with self._lock:
            dropped = self._expire_locked()
            entry = self._entries.get(key.session_id)
            if entry is not None and entry.function == function:
                entry.last_used = self._monotonic()
                self._entries.move_to_end(key.session_id)
            else:
                entry = None
        for old in dropped:
            self._release(old)
        return entry

    def add(self, function: str, value: S) -> Entry[S]:
        """Store a new session (evicting the least recently used one if full)."""
        entry = Entry(new_session_id(), function, value, last_used=self._monotonic())
        with self._lock:
            dropped = self._expire_locked()
            while len(self._entries) >= self.max_sessions:
                _, oldest = self._entries.popitem(last=False)
                self.evicted += 1
                dropped.append(oldest)
            self._entries[entry.session_id] = entry
        for old in dropped:
            self._release(old)
        return entry

    def discard(self, entry: Entry[S]) -> None:
        """Drop a session (e.g. one replaced by a restart) and close it."""
        with self._lock:
            if self._entries.get(entry.session_id) is entry:
                del self._entries[entry.session_id]
        self._release(entry)

    def clear(self) -> None:
        """Drop every session."""
        with self._lock:
            dropped = list(self._entries.values())
            self._entries.clear()
        for entry in dropped:
            self._release(entry)

    def _expire_locked(self) -> list[Entry[S]]:
        now, dropped = self._monotonic(), []
        while self._entries:
            entry = next(iter(self._entries.values()))
            if now - entry.last_used <= self.ttl_s:
                break
            self._entries.popitem(last=False)
            self.expired += 1
            dropped.append(entry)
        return dropped

    def _release(self, entry: Entry[S]) -> None:
        """Close a dropped session now if no thread runs it, else leave it to that thread."""
        if entry.lock.acquire(blocking=False):
            try:
                self._close(entry.value)
            finally:
                entry.lock.release()

    def is_stored(self, entry: Entry[S]) -> bool:
        """Whether `entry` is still in the table (not evicted or expired meanwhile)."""
        with self._lock:
            return self._entries.get(entry.session_id) is entry
