"""The Redis session store against a real redis-server: the same rules as the in-process store,
kept by one Lua script for every process at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local_cluster import RedisServer
from session_manager import SessionStatus
from session_store import CHANNEL, RedisSessionStore, StoreUnavailable


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[RedisSessionStore]:
    client = redis_server.client()
    client.flushall()
    yield RedisSessionStore(client, ttl_seconds=3600)
    client.close()


def test_a_new_session_is_queued_with_the_ttl_set_at_creation(
    store: RedisSessionStore,
) -> None:
    session_id = store.create_session("s/video.mp4", "full", {"reel": True})
    session = store.get_session(session_id)
    assert session is not None
    assert session.status is SessionStatus.QUEUED and session.progress == 0
    assert session.params == {"reel": True} and session.artifacts == ()
    assert 3590 < store.client.ttl(store.key(session_id)) <= 3600
    assert store.count() == 1 and store.count(SessionStatus.QUEUED) == 1
    with pytest.raises(ValueError, match="already exists"):
        store.create_session("x", "full", {}, session_id=session_id)


def test_every_field_reads_back_as_it_was_written(store: RedisSessionStore) -> None:
    # Text that JSON must escape, nested data, floats, None and a tuple: the hash is
    # parsed as one JSON object, so a value that ended its member early would show here.
    params = {"reel": False, "sample_fps": 12.5, "note": 'a "quoted", \\ back\\slash'}
    session_id = store.create_session('s/vidéo "1".mp4', "full", params, work_dir="s/w,1")
    result = {"highlights": [{"start": 1.25, "thumbnail": None}], "workout": {"total_reps": 8}}
    assert store.update_session(
        session_id,
        status=SessionStatus.FAILED,
        progress=73,
        message="Analyzing segment 13/20",
        result=result,
        error='Broken: "moov" atom}\n{"id": "x"} — ünïcode',
        artifacts=("thumb_0.jpg", "reel.mp4"),
        started_at=1795850000.125,
        interruptions=1,
    )
    session = store.get_session(session_id)
    assert session is not None
    assert (session.id, session.video_path, session.work_dir) == (
        session_id,
        's/vidéo "1".mp4',
        "s/w,1",
    )
    assert session.params == params and session.result == result
    assert session.status is SessionStatus.FAILED and session.progress == 73
    assert session.error == 'Broken: "moov" atom}\n{"id": "x"} — ünïcode'
    assert session.artifacts == ("thumb_0.jpg", "reel.mp4")
    assert session.started_at == 1795850000.125 and session.finished_at is None
    assert session.interruptions == 1 and session.message == "Analyzing segment 13/20"
    without = store.get_session(session_id, with_result=False)
    assert without is not None and without.result is None
    assert without.error == session.error and without.updated_at == session.updated_at


def test_progress_never_goes_backwards(store: RedisSessionStore) -> None:
    session_id = store.create_session("v", "workout", {})
    assert store.update_session(session_id, progress=40)
    assert store.update_session(session_id, progress=10)
    assert store.update_session(session_id, progress=250)
    session = store.get_session(session_id)
    assert session is not None and session.progress == 100


def test_expected_status_guards_an_update(store: RedisSessionStore) -> None:
    session_id = store.create_session("v", "workout", {})
    assert store.update_session(session_id, status=SessionStatus.CANCELLED)
    # A late progress report from a worker that expects `processing` changes nothing.
    late = store.update_session(session_id, expect_status=SessionStatus.PROCESSING, progress=50)
    assert late is False
    session = store.get_session(session_id)
    assert session is not None and session.progress == 0
    assert store.count(SessionStatus.CANCELLED) == 1 and store.count(SessionStatus.QUEUED) == 0


def test_a_terminal_status_is_final(store: RedisSessionStore) -> None:
    session_id = store.create_session("v", "workout", {})
    assert store.update_session(session_id, status=SessionStatus.COMPLETED, progress=100)
    assert not store.update_session(session_id, status=SessionStatus.PROCESSING)
    # Other fields of an ended session may still change (a result dropped after a cancel).
    assert store.update_session(session_id, result=None, artifacts=())
    session = store.get_session(session_id)
    assert session is not None and session.status is SessionStatus.COMPLETED


def test_concurrent_updates_from_many_threads_stay_consistent(store: RedisSessionStore) -> None:
    session_id = store.create_session("v", "workout", {})
    store.update_session(session_id, status=SessionStatus.PROCESSING)

    def report(start: int) -> None:
        for progress in range(start, 100, 8):
            store.update_session(
                session_id, expect_status=SessionStatus.PROCESSING, progress=progress
            )

    threads = [threading.Thread(target=report, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    session = store.get_session(session_id)
    assert session is not None and session.progress == 99


def test_every_change_is_published_on_the_channel(store: RedisSessionStore) -> None:
    pubsub = store.client.pubsub()
    pubsub.subscribe(CHANNEL)
    pubsub.get_message(timeout=1)  # the subscription's confirmation
    session_id = store.create_session("v", "workout", {})
    store.update_session(session_id, progress=5)
    store.delete_session(session_id)
    messages: list[Any] = []
    deadline = time.monotonic() + 5
    while len(messages) < 3 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message is not None:
            messages.append(message["data"].decode())
    pubsub.close()
    assert messages == [session_id] * 3


def test_expired_lists_sessions_whose_hash_redis_already_dropped(
    store: RedisSessionStore,
) -> None:
    old = store.create_session("v", "workout", {})
    store.client.delete(store.key(old))  # as Redis does at the TTL, before any sweep
    new = store.create_session("v", "workout", {})
    assert store.expired(time.time() + 60, 30) == [old, new]
    assert store.expired(time.time(), 30) == []
    assert store.delete_session(old) is False  # its hash was gone...
    assert store.expired(time.time() + 60, 30) == [new]  # ...but it left the index


def test_unknown_fields_and_statuses_are_refused(store: RedisSessionStore) -> None:
    session_id = store.create_session("v", "workout", {})
    with pytest.raises(ValueError, match="unknown session field"):
        store.update_session(session_id, colour="red")
    with pytest.raises(ValueError):
        store.update_session(session_id, status="resting")


def test_a_redis_that_is_gone_is_store_unavailable(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    store = RedisSessionStore(server.client(), ttl_seconds=60)
    try:
        session_id = store.create_session("v", "workout", {})
        server.stop()
        with pytest.raises(StoreUnavailable):
            store.get_session(session_id)
        assert not store.healthy
        server.start()  # the same port and data folder: the append-only file brings it back
        assert store.get_session(session_id) is not None
        assert store.healthy
    finally:
        store.close()
        server.stop()
