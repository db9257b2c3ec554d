"""The session store: the specification's script, snapshots, compare-and-set, concurrency."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from session_manager import SessionManager, SessionStatus
from tests.conftest import join_all


def test_specification_script_passes_as_written() -> None:
    manager = SessionManager()
    session_id = manager.create_session("/path/video.mp4", "highlights", {})
    assert manager.get_session(session_id) is not None
    assert manager.update_session(session_id, status="processing")
    assert manager.delete_session(session_id)


def test_new_session_is_queued_with_a_uuid_and_timestamps() -> None:
    manager = SessionManager()
    session_id = manager.create_session("/v.mp4", "workout", {"reel": True})
    session = manager.get_session(session_id)
    assert session is not None
    assert len(session_id) == 36 and session_id.count("-") == 4
    assert session.status is SessionStatus.QUEUED
    assert session.progress == 0
    assert session.analysis_type == "workout"
    assert session.params == {"reel": True}
    assert session.video_path == "/v.mp4"
    assert session.created_at <= session.updated_at
    assert session.started_at is None and session.finished_at is None


def test_unknown_session_reads_none_and_updates_false() -> None:
    manager = SessionManager()
    assert manager.get_session("nope") is None
    assert manager.update_session("nope", progress=5) is False
    assert manager.delete_session("nope") is False


def test_unknown_field_is_a_value_error() -> None:
    manager = SessionManager()
    session_id = manager.create_session("/v.mp4", "highlights", {})
    with pytest.raises(ValueError, match="colour"):
        manager.update_session(session_id, colour="red")
    with pytest.raises(ValueError):
        manager.update_session(session_id, id="other")
    with pytest.raises(ValueError):
        manager.update_session(session_id, status="sleeping")


def test_progress_never_goes_backwards_and_stays_in_range() -> None:
    manager = SessionManager()
    session_id = manager.create_session("/v.mp4", "highlights", {})
    manager.update_session(session_id, progress=40)
    manager.update_session(session_id, progress=10)
    assert manager.get_session(session_id).progress == 40  # type: ignore[union-attr]
    manager.update_session(session_id, progress=250)
    assert manager.get_session(session_id).progress == 100  # type: ignore[union-attr]


def test_snapshots_do_not_share_state_with_the_store() -> None:
    manager = SessionManager()
    params = {"max_highlights": 3}
    session_id = manager.create_session("/v.mp4", "highlights", params)
    params["max_highlights"] = 99
    manager.update_session(session_id, result={"highlights": [1, 2]})
    snapshot = manager.get_session(session_id)
    assert snapshot is not None
    snapshot.result["highlights"].append(3)  # type: ignore[index]
    snapshot.params["sneaky"] = True
    snapshot.progress = 77
    fresh = manager.get_session(session_id)
    assert fresh is not None
    assert fresh.result == {"highlights": [1, 2]}
    assert fresh.params == {"max_highlights": 3}
    assert fresh.progress == 0


def test_expected_status_guards_an_update() -> None:
    manager = SessionManager()
    session_id = manager.create_session("/v.mp4", "highlights", {})
    manager.update_session(session_id, status=SessionStatus.CANCELLED)
    # A worker's late progress report must not revive a cancelled session.
    assert not manager.update_session(
        session_id, expect_status=SessionStatus.PROCESSING, progress=50
    )
    session = manager.get_session(session_id)
    assert session is not None
    assert session.status is SessionStatus.CANCELLED and session.progress == 0


def test_duplicate_session_id_is_refused() -> None:
    manager = SessionManager()
    manager.create_session("/v.mp4", "highlights", {}, session_id="fixed")
    with pytest.raises(ValueError):
        manager.create_session("/w.mp4", "highlights", {}, session_id="fixed")


def test_listing_is_oldest_first_and_filters_by_status() -> None:
    manager = SessionManager()
    ids = [manager.create_session(f"/{i}.mp4", "highlights", {}) for i in range(3)]
    manager.update_session(ids[1], status="completed")
    assert [s.id for s in manager.list_sessions()] == ids
    assert [s.id for s in manager.list_sessions(SessionStatus.COMPLETED)] == [ids[1]]
    assert manager.count(SessionStatus.QUEUED) == 2
    assert len(manager) == 3


def test_expired_lists_sessions_older_than_the_ttl() -> None:
    manager = SessionManager()
    old = manager.create_session("/old.mp4", "highlights", {})
    created = manager.get_session(old).created_at  # type: ignore[union-attr]
    day = 24 * 3600
    assert manager.expired(created + day - 1, ttl_seconds=day) == []
    assert manager.expired(created + day + 1, ttl_seconds=day) == [old]
    manager.delete_session(old)
    assert manager.expired(created + 10 * day, ttl_seconds=day) == []


def test_concurrent_updates_from_many_threads_stay_consistent() -> None:
    manager = SessionManager()
    ids = [manager.create_session(f"/{i}.mp4", "workout", {}) for i in range(8)]
    highest = {session_id: 0 for session_id in ids}
    lock = threading.Lock()
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            start.wait(timeout=30)
            for _ in range(2000):
                session_id = rng.choice(ids)
                value = rng.randint(0, 100)
                assert manager.update_session(session_id, progress=value, message=f"m{value}")
                with lock:
                    highest[session_id] = max(highest[session_id], value)
                snapshot = manager.get_session(session_id)
                assert snapshot is not None and 0 <= snapshot.progress <= 100
                manager.list_sessions()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    join_all(threads)
    assert not errors
    for session_id in ids:
        assert manager.get_session(session_id).progress == highest[session_id]  # type: ignore[union-attr]


def test_concurrent_create_and_delete_lose_nothing() -> None:
    manager = SessionManager()
    created: list[str] = []
    lock = threading.Lock()

    def churn() -> None:
        for _ in range(500):
            session_id = manager.create_session("/v.mp4", "highlights", {})
            assert manager.delete_session(session_id)
            keep = manager.create_session("/k.mp4", "highlights", {})
            with lock:
                created.append(keep)

    threads = [threading.Thread(target=churn) for _ in range(8)]
    for t in threads:
        t.start()
    join_all(threads)
    assert len(manager) == len(created) == 4000
    assert len(set(created)) == 4000


# -- write-through to SQLite ---------------------------------------------------------------------


def test_sessions_are_reloaded_from_the_database(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "sessions.sqlite3"
    first = SessionManager(db)
    kept = first.create_session("/a.mp4", "full", {"reel": True})
    first.update_session(
        kept,
        status="completed",
        progress=100,
        result={"analysis_type": "full", "highlights": []},
        artifacts=("highlight_1.jpg",),
    )
    gone = first.create_session("/b.mp4", "workout", {})
    first.delete_session(gone)
    first.close()

    second = SessionManager(db)
    session = second.get_session(kept)
    assert session is not None
    assert session.status is SessionStatus.COMPLETED
    assert session.progress == 100
    assert session.params == {"reel": True}
    assert session.result == {"analysis_type": "full", "highlights": []}
    assert session.artifacts == ("highlight_1.jpg",)
    assert second.get_session(gone) is None
    second.close()


def test_flush_makes_every_change_durable_in_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "sessions.sqlite3"
    manager = SessionManager(db)
    session_id = manager.create_session("/a.mp4", "workout", {})
    for progress in range(1, 101):
        manager.update_session(session_id, progress=progress, message=f"step {progress}")
    manager.flush()
    # A second reader sees the last state without the first store being closed (as after a
    # SIGKILL).
    reloaded = SessionManager(db).get_session(session_id)
    assert reloaded is not None
    assert (reloaded.progress, reloaded.message) == (100, "step 100")
    manager.close()


def test_a_snapshot_without_the_result_leaves_the_stored_result_intact() -> None:
    manager = SessionManager()
    session_id = manager.create_session("/v.mp4", "full", {})
    manager.update_session(session_id, result={"big": list(range(1000))})
    light = manager.get_session(session_id, with_result=False)
    assert light is not None and light.result is None
    full = manager.get_session(session_id)
    assert full is not None and full.result == {"big": list(range(1000))}


def _hold_write_lock(db: Path) -> sqlite3.Connection:
    """Another connection that takes the database's write lock and keeps it, as a backup tool
    or a stray sqlite3 shell can: every write of the store is then refused ("locked")."""
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    return blocker


def test_a_write_the_database_refuses_is_retried_until_it_lands(tmp_path: Path) -> None:
    db = tmp_path / "sessions.sqlite3"
    manager = SessionManager(db)
    assert manager.healthy
    blocker = _hold_write_lock(db)
    session_id = manager.create_session("/a.mp4", "workout", {})
    # Refused, and said so at once: the flush does not wait for its whole deadline.
    started = time.monotonic()
    assert manager.flush(timeout=30) is False
    assert time.monotonic() - started < 10
    assert not manager.healthy
    manager.update_session(session_id, progress=50, message="half way")
    blocker.rollback()
    blocker.close()

    deadline = time.monotonic() + 10
    while not manager.healthy:
        assert time.monotonic() < deadline, "the writer never recovered"
        time.sleep(0.05)
    assert manager.flush(timeout=5)
    reloaded = SessionManager(db)
    session = reloaded.get_session(session_id)
    assert session is not None
    assert (session.progress, session.message) == (50, "half way")
    reloaded.close()
    manager.close()


def test_interruptions_are_stored_and_default_to_zero(tmp_path: Path) -> None:
    db = tmp_path / "sessions.sqlite3"
    manager = SessionManager(db)
    session_id = manager.create_session("/a.mp4", "workout", {})
    assert manager.get_session(session_id).interruptions == 0  # type: ignore[union-attr]
    manager.update_session(session_id, interruptions=1)
    manager.close()
    reloaded = SessionManager(db)
    assert reloaded.get_session(session_id).interruptions == 1  # type: ignore[union-attr]
    reloaded.close()
