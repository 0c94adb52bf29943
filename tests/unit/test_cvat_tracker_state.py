"""Tracker state keys (signing, expiry, tampering) and the bounded, expiring session store."""

from __future__ import annotations

import logging
import threading

import pytest

from ml_backend.cvat.tracker_sessions import SessionStore, StateKey, StateSigner


class Clock:
    """A settable clock."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_key_verifies_only_for_its_function_and_before_it_expires() -> None:
    clock = Clock()
    signer = StateSigner("secret", clock=clock)
    key = signer.issue("unsamv2-tracker-part", "abc", 3, ttl_s=600)
    found = signer.verify("unsamv2-tracker-part", key)
    assert found == StateKey("abc", 3, found.expires_at if found else 0)
    assert found is not None and found.expires_at > clock.now + 599
    assert signer.verify("unsamv2-tracker-fine", key) is None  # another preset's state
    clock.now += 602
    assert signer.verify("unsamv2-tracker-part", key) is None  # expired


@pytest.mark.parametrize(
    "tamper",
    [
        lambda k: k.replace(".3.", ".4.", 1),  # another step
        lambda k: "x" + k,  # another session id
        lambda k: k[:-1] + ("0" if k[-1] != "0" else "1"),  # another signature
        lambda k: ".".join(k.split(".")[:2] + ["9999999999"] + k.split(".")[3:]),  # later expiry
        lambda k: k.rsplit(".", 1)[0],  # no signature
        lambda k: k + ".extra",
        lambda k: "",
        lambda k: "a.b.c.d",
        lambda k: k + "0" * 300,  # overlong
    ],
)
def test_tampered_keys_are_refused(tamper) -> None:
    signer = StateSigner("secret")
    key = signer.issue("f", "abc", 3, ttl_s=600)
    assert signer.verify("f", key) is not None
    assert signer.verify("f", tamper(key)) is None


def test_keys_of_another_secret_are_refused_and_a_missing_secret_warns(caplog) -> None:
    key = StateSigner("one").issue("f", "abc", 0, ttl_s=60)
    assert StateSigner("two").verify("f", key) is None
    with caplog.at_level(logging.WARNING):
        random_a, random_b = StateSigner(None), StateSigner(None)
    assert "UNSAMV2_CVAT_STATE_SECRET" in caplog.text
    assert random_b.verify("f", random_a.issue("f", "abc", 0, ttl_s=60)) is None


def test_the_store_evicts_the_least_recently_used_and_closes_it() -> None:
    closed: list[str] = []
    store: SessionStore[str] = SessionStore(2, 600, close=closed.append, monotonic=Clock())
    first, second = store.add("f", "first"), store.add("f", "second")
    # using the first makes the second the least recently used
    assert store.get(StateKey(first.session_id, 0, 0), "f") is first
    third = store.add("f", "third")
    assert len(store) == 2 and closed == ["second"] and store.evicted == 1
    assert store.get(StateKey(second.session_id, 0, 0), "f") is None
    assert store.get(StateKey(third.session_id, 0, 0), "f") is third
    assert store.get(StateKey(third.session_id, 0, 0), "another function") is None
    store.discard(first)
    assert closed == ["second", "first"] and len(store) == 1
    store.clear()
    assert closed == ["second", "first", "third"] and len(store) == 0


def test_idle_sessions_expire() -> None:
    clock, closed = Clock(), []
    store: SessionStore[str] = SessionStore(4, 10, close=closed.append, monotonic=clock)
    old = store.add("f", "old")
    clock.now += 6
    recent = store.add("f", "recent")
    clock.now += 6  # old idle 12 s, recent 6 s
    assert store.get(StateKey(old.session_id, 0, 0), "f") is None
    assert store.get(StateKey(recent.session_id, 0, 0), "f") is recent
    assert closed == ["old"] and store.expired == 1


def test_a_session_in_use_is_not_closed_under_its_user() -> None:
    closed: list[str] = []
    store: SessionStore[str] = SessionStore(1, 600, close=closed.append)
    busy = store.add("f", "busy")
    with busy.lock:  # a request is tracking it
        store.add("f", "newer")
        assert closed == [] and not store.is_stored(busy)
    assert closed == []  # left to the user (the tracker closes it when it sees it dropped)


def test_the_store_is_safe_under_threads() -> None:
    store: SessionStore[int] = SessionStore(8, 600)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(200):
                entry = store.add("f", offset + i)
                store.get(StateKey(entry.session_id, 0, 0), "f")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(1000 * n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(store) == 8 and store.evicted == 800 - 8


def test_store_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="max_sessions"):
        SessionStore(0, 10)
    with pytest.raises(ValueError, match="ttl_s"):
        SessionStore(1, 0)
