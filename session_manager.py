"""The session store: what each uploaded video's analysis is doing, and its result.

It owns the `SessionStatus` enum and the `Session` record. Every public method takes the lock
once, does only in-memory work under it and returns a snapshot copy, so a caller (an HTTP
handler, a worker thread) never holds a reference to shared state and never waits on I/O done
under the lock.

With a `db_path`, the store writes through to SQLite so sessions survive a restart. Memory stays
the fast path for reads; each change queues a snapshot (in order, under the lock) for one writer
thread, which coalesces bursts of progress reports into one transaction. Changes that must not be
lost (a new session, a terminal status) are followed by `flush(timeout)`, which returns once they
are committed. A change the database refuses is kept and retried until it is written, never
dropped; meanwhile `healthy` is False.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class SessionStatus(StrEnum):
    """Where a session is in its life; the terminal ones never change again."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.CANCELLED})


@dataclass
class Session:
    """One upload and its analysis. `video_path` and `work_dir` are private: never on the wire."""

    id: str
    analysis_type: str
    params: dict[str, Any]
    video_path: str
    work_dir: str | None = None
    status: SessionStatus = SessionStatus.QUEUED
    progress: int = 0
    message: str = "Queued for analysis"
    result: dict[str, Any] | None = None
    error: str | None = None
    artifacts: tuple[str, ...] = ()
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    # How many times the process died while this session was processing (found so at start-up);
    # a shutdown that hands the work back is not counted.
    interruptions: int = 0


# What `update_session` may change; the identity and the creation time are fixed.
_UPDATABLE = frozenset(
    f.name for f in dataclasses.fields(Session) if f.name not in {"id", "created_at"}
)


class SessionManager:
    """A thread-safe, in-memory map of session id to `Session`, optionally kept in SQLite.

    Args:
        db_path: a SQLite file to load the sessions from and write every change through to;
            None keeps them in memory only.
    """

    def __init__(self, db_path: str | Path | None = None) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._writer: _Writer | None = None
        if db_path is not None:
            self._writer = _Writer(Path(db_path))
            self._sessions = {s.id: s for s in self._writer.load()}
            self._writer.start()

    @property
    def healthy(self) -> bool:
        """False while changes cannot be written to the database (they are kept and retried)."""
        return self._writer is None or self._writer.healthy

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every change made so far is committed to the database.

        Args:
            timeout: the most seconds to wait; None waits as long as it takes.

        Returns:
            True when they are committed (always, without a database); False when the deadline
            passed first or the database is failing right now. The changes stay queued either
            way and are written once it can be done.
        """
        if self._writer is None:
            return True
        return self._writer.flush(timeout)

    def close(self, timeout: float = 2.0) -> None:
        """Write what is pending (retrying a failing database for up to `timeout` seconds) and
        stop the writer; the store stays readable in memory."""
        if self._writer is not None:
            self._writer.close(timeout)
            self._writer = None

    def _persist_locked(self, session_id: str, session: Session | None) -> None:
        # Called under the lock so the writer sees changes in the order they happened; it only
        # serialises and queues, the disk is the writer thread's business.
        if self._writer is not None:
            self._writer.put(session_id, None if session is None else _to_json(session))

    def create_session(
        self,
        video_path: str,
        analysis_type: str,
        params: dict[str, Any],
        *,
        session_id: str | None = None,
        work_dir: str | None = None,
    ) -> str:
        """Record a new queued session.

        Args:
            video_path: where the uploaded video is stored.
            analysis_type: "highlights", "workout" or "full".
            params: the validated analysis parameters.
            session_id: an id chosen beforehand (the upload writes into a folder named after it);
                a fresh uuid4 when omitted.
            work_dir: the session's own folder, removed with the session.

        Returns:
            The session id.

        Raises:
            ValueError: `session_id` is already taken.
        """
        session = Session(
            id=session_id or str(uuid.uuid4()),
            analysis_type=analysis_type,
            params=copy.deepcopy(params),
            video_path=str(video_path),
            work_dir=work_dir,
        )
        with self._lock:
            if session.id in self._sessions:
                raise ValueError(f"session {session.id} already exists")
            self._sessions[session.id] = session
            self._persist_locked(session.id, session)
        return session.id

    def get_session(self, session_id: str, *, with_result: bool = True) -> Session | None:
        """A copy of the session, or None when there is no such session.

        Args:
            session_id: the session.
            with_result: False leaves `result` out (None). It is the one large field, and a
                status poll, an event-stream tick or a worker never needs it: copying it on
                each of those was most of what a poll cost.
        """
        with self._lock:
            session = self._sessions.get(session_id)
            return _snapshot(session, with_result) if session is not None else None

    def update_session(
        self,
        session_id: str,
        *,
        expect_status: SessionStatus | frozenset[SessionStatus] | None = None,
        **updates: Any,
    ) -> bool:
        """Change fields of a session.

        Progress never goes backwards (a smaller value is ignored) and `updated_at` is refreshed.

        Args:
            session_id: the session to change.
            expect_status: apply the change only while the session is in this status (or one of
                these): the compare-and-set that keeps a late progress report from a worker from
                overwriting a cancellation.
            **updates: field names of `Session` and their new values.

        Returns:
            True when the session exists (and was in the expected status) and was changed.

        Raises:
            ValueError: a field name that a session does not have (or may not change), or a
                status that is not a `SessionStatus`.
        """
        expect_status = checked_update(updates, expect_status)
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return False
            if expect_status is not None and session.status not in expect_status:
                return False
            if "progress" in updates:
                updates["progress"] = max(session.progress, updates["progress"])
            for name, value in updates.items():
                setattr(session, name, value)
            session.updated_at = time.time()
            self._persist_locked(session_id, session)
            return True

    def delete_session(self, session_id: str) -> bool:
        """Forget a session; False when there was none."""
        with self._lock:
            if self._sessions.pop(session_id, None) is None:
                return False
            self._persist_locked(session_id, None)
            return True

    def list_sessions(self, status: SessionStatus | None = None) -> list[Session]:
        """Copies of every session (or those in `status`), oldest first."""
        with self._lock:
            sessions = [s for s in self._sessions.values() if status is None or s.status == status]
            return [_snapshot(s) for s in sorted(sessions, key=lambda s: s.created_at)]

    def expired(self, now: float, ttl_seconds: float) -> list[str]:
        """Ids of the sessions created more than `ttl_seconds` before `now`."""
        cutoff = now - ttl_seconds
        with self._lock:
            return [s.id for s in self._sessions.values() if s.created_at < cutoff]

    def count(self, status: SessionStatus | None = None) -> int:
        """How many sessions there are (in `status`, when given)."""
        with self._lock:
            if status is None:
                return len(self._sessions)
            return sum(1 for s in self._sessions.values() if s.status == status)

    def __len__(self) -> int:
        return self.count()


def checked_update(
    updates: dict[str, Any], expect_status: SessionStatus | frozenset[SessionStatus] | None
) -> frozenset[SessionStatus] | None:
    """Check and normalise the arguments of an `update_session` (any store), in place: a status
    becomes a `SessionStatus`, progress an int in 0-100; returns the expected statuses as a set.

    Raises:
        ValueError: a field a session does not have (or may not change), or an unknown status.
    """
    unknown = set(updates) - _UPDATABLE
    if unknown:
        raise ValueError(f"unknown session field(s): {', '.join(sorted(unknown))}")
    if "status" in updates:
        updates["status"] = SessionStatus(updates["status"])
    if "progress" in updates:
        updates["progress"] = max(0, min(100, int(updates["progress"])))
    if isinstance(expect_status, SessionStatus):
        return frozenset({expect_status})
    return expect_status


def _snapshot(session: Session, with_result: bool = True) -> Session:
    # The result and params are nested dicts a caller could mutate: copy them too.
    return dataclasses.replace(
        session,
        params=copy.deepcopy(session.params),
        result=copy.deepcopy(session.result) if with_result else None,
    )


def _to_json(session: Session) -> str:
    return json.dumps(dataclasses.asdict(session), separators=(",", ":"))


def _from_json(text: str) -> Session:
    fields = json.loads(text)
    fields["status"] = SessionStatus(fields["status"])
    fields["artifacts"] = tuple(fields.get("artifacts", ()))
    known = {f.name for f in dataclasses.fields(Session)}
    return Session(**{k: v for k, v in fields.items() if k in known})


_STOP = object()


@dataclass
class _Flush:
    """A flush request in the writer's queue: `done` is set once the changes queued before it
    are committed (`committed` True) or an attempt to commit them failed."""

    done: threading.Event = field(default_factory=threading.Event)
    committed: bool = False


# How long a write waits for another connection's lock before it counts as a failure.
_BUSY_TIMEOUT_SECONDS = 1.0
# Retries of a failing write back off from the first delay to the last, doubling.
_RETRY_FIRST_SECONDS = 0.05
_RETRY_LAST_SECONDS = 2.0


class _Writer:
    """One thread that owns the SQLite connection and applies queued changes in order.

    A batch the database refuses stays pending (newer changes of the same session replace it)
    and is retried with backoff on a fresh connection; flushes wait until it is written.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="session-writer", daemon=True)
        # Written by the writer thread only; a bool is read atomically elsewhere.
        self._failing = False
        self._close_timeout = 0.0
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, data TEXT)")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self._path,
            timeout=_BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
        # WAL: a crash mid-write leaves the last committed state, and commits are cheap.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def load(self) -> list[Session]:
        db = self._connect()
        try:
            sessions = []
            for session_id, data in db.execute("SELECT id, data FROM sessions"):
                try:
                    sessions.append(_from_json(data))
                except (ValueError, TypeError, KeyError):
                    logger.exception("skipping unreadable stored session %s", session_id)
            return sessions
        finally:
            db.close()

    @property
    def healthy(self) -> bool:
        return self._thread.is_alive() and not self._failing

    def start(self) -> None:
        self._thread.start()

    def put(self, session_id: str, data: str | None) -> None:
        self._queue.put((session_id, data))

    def flush(self, timeout: float | None) -> bool:
        if not self.healthy:
            return False  # nothing is committed until the fault clears: no point waiting
        waiter = _Flush()
        self._queue.put(waiter)
        return waiter.done.wait(timeout) and waiter.committed

    def close(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._close_timeout = timeout
            self._queue.put(_STOP)
            self._thread.join()

    def _run(self) -> None:
        db: sqlite3.Connection | None = None
        pending: dict[str, str | None] = {}  # latest state per session, not yet committed
        waiters: list[_Flush] = []
        stop_at: float | None = None
        retry_at = 0.0
        delay = _RETRY_FIRST_SECONDS
        try:
            while True:
                # Block for new changes; while a batch waits for its retry, only until then (or
                # until the close deadline).
                wait = None
                if pending:
                    until = retry_at if stop_at is None else min(retry_at, stop_at)
                    wait = max(0.0, until - time.monotonic())
                try:
                    items = [self._queue.get(timeout=wait)]
                except queue.Empty:
                    items = []
                while True:  # take whatever else is waiting: one transaction for a burst
                    try:
                        items.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                for item in items:
                    if item is _STOP:
                        stop_at = time.monotonic() + self._close_timeout
                    elif isinstance(item, _Flush):
                        waiters.append(item)
                    else:
                        pending[item[0]] = item[1]
                if pending and time.monotonic() >= retry_at:
                    try:
                        db = db or self._connect()
                        self._apply(db, pending)
                    except (sqlite3.Error, OSError):
                        if not self._failing:
                            logger.exception(
                                "could not write %d session change(s) to the database; "
                                "retrying until it works",
                                len(pending),
                            )
                        self._failing = True
                        if db is not None:
                            db.close()
                            db = None  # a fresh connection for the retry
                        retry_at = time.monotonic() + delay
                        delay = min(_RETRY_LAST_SECONDS, delay * 2)
                        # Their changes are not in yet: tell the flushes now, not at their
                        # deadlines (the changes stay pending).
                        for waiter in waiters:
                            waiter.done.set()
                        waiters.clear()
                    else:
                        pending.clear()
                        if self._failing:
                            logger.warning("session database writes work again")
                        self._failing = False
                        delay = _RETRY_FIRST_SECONDS
                if not pending:
                    # Everything queued before these flushes is committed.
                    for waiter in waiters:
                        waiter.committed = True
                        waiter.done.set()
                    waiters.clear()
                    if stop_at is not None:
                        return
                elif stop_at is not None and time.monotonic() >= stop_at:
                    logger.error(
                        "shutting down with %d session change(s) the database refused",
                        len(pending),
                    )
                    return
        finally:
            if db is not None:
                db.close()

    @staticmethod
    def _apply(db: sqlite3.Connection, latest: dict[str, str | None]) -> None:
        try:
            db.execute("BEGIN IMMEDIATE")
            for session_id, data in latest.items():
                if data is None:
                    db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO sessions (id, data) VALUES (?, ?)",
                        (session_id, data),
                    )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the connection is dropped and a fresh one retries the batch
            raise
