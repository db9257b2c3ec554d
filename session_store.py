"""The session store `video_service.py` depends on, and its Redis implementation.

`SessionStore` is the interface: `session_manager.SessionManager` (memory + SQLite, one process)
is one, `RedisSessionStore` (shared by every API replica and worker) the other. Both keep the same
rules: progress never goes backwards, an update can be made conditional on the status
(`expect_status`, the compare-and-set that keeps a late progress report from undoing a cancel),
and reads are snapshots.

In Redis each session is one hash, `video:session:<id>`, whose fields hold JSON values. Every
change goes through one server-side Lua script (`_UPDATE`), so the check and the write are one
atomic step for every process at once; the script also refuses to move a terminal status (the
end of a session is final) and publishes the session id on `video:changes`. One sorted set per
status (`video:sessions:<status>`, scored by creation time) indexes the sessions for counts,
listings and expiry. The hash carries the session TTL (plus a grace period) from its creation,
so Redis forgets a session even if nothing sweeps; the sweeper (`VideoService.expire`) finds
expired ids in the indexes, including ids whose hash Redis has already dropped, and removes
their files too. Keyspace notifications were the alternative: they are fire-and-forget (an
expiry while no API process listens is lost with its files) and need `CONFIG SET`, which managed
Redis services often refuse.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from session_manager import Session, SessionStatus, checked_update

logger = logging.getLogger(__name__)


class SessionStore(Protocol):
    """Sessions by id: what every process that serves or analyses a session shares."""

    @property
    def healthy(self) -> bool:
        """False while changes cannot be saved (the API says `degraded`)."""
        ...

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every change made so far is durable; False when it is not (yet)."""
        ...

    def close(self, timeout: float = 2.0) -> None: ...

    def create_session(
        self,
        video_path: str,
        analysis_type: str,
        params: dict[str, Any],
        *,
        session_id: str | None = None,
        work_dir: str | None = None,
    ) -> str: ...

    def get_session(self, session_id: str, *, with_result: bool = True) -> Session | None: ...

    def update_session(
        self,
        session_id: str,
        *,
        expect_status: SessionStatus | frozenset[SessionStatus] | None = None,
        **updates: Any,
    ) -> bool: ...

    def delete_session(self, session_id: str) -> bool: ...

    def list_sessions(self, status: SessionStatus | None = None) -> list[Session]: ...

    def expired(self, now: float, ttl_seconds: float) -> list[str]: ...

    def count(self, status: SessionStatus | None = None) -> int: ...

    def __len__(self) -> int: ...


class StoreUnavailable(Exception):
    """Redis (the sessions or the job queue) cannot be reached right now; the API answers 503."""

    def __init__(self) -> None:
        super().__init__("The service cannot reach its session store right now; try again shortly")


_FIELDS = tuple(f for f in Session.__dataclass_fields__)
_STATUSES = tuple(SessionStatus)
PREFIX = "video:"
CHANNEL = f"{PREFIX}changes"

# KEYS[1]: the session's hash; KEYS[2..6]: the index of each status, in _STATUSES order.
# ARGV[1]: the allowed current statuses, JSON-encoded, one per line ('' for any); ARGV[2]:
# updated_at (JSON); ARGV[3]: the channel; ARGV[4]: the session id; ARGV[5..]: field, JSON value.
_UPDATE = """
local STATUSES = {STATUSES_JSON}
local function index_of(status)
  for i, s in ipairs(STATUSES) do
    if s == status then return KEYS[i + 1] end
  end
  return nil
end
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return 0 end
if ARGV[1] ~= '' then
  local allowed = false
  for expected in string.gmatch(ARGV[1], '[^\\n]+') do
    if expected == current then allowed = true end
  end
  if not allowed then return 0 end
end
local terminal = current == '"completed"' or current == '"failed"' or current == '"cancelled"'
local changes = {}
for i = 5, #ARGV, 2 do
  local name, value = ARGV[i], ARGV[i + 1]
  if name == 'progress' then
    local stored = tonumber(redis.call('HGET', KEYS[1], 'progress')) or 0
    if tonumber(value) < stored then value = tostring(stored) end
  elseif name == 'status' and value ~= current then
    if terminal then return 0 end
    local created = redis.call('HGET', KEYS[1], 'created_at')
    redis.call('ZREM', index_of(current), ARGV[4])
    redis.call('ZADD', index_of(value), created, ARGV[4])
  end
  changes[#changes + 1] = name
  changes[#changes + 1] = value
end
changes[#changes + 1] = 'updated_at'
changes[#changes + 1] = ARGV[2]
redis.call('HSET', KEYS[1], unpack(changes))
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
""".replace("STATUSES_JSON", ", ".join(f"'{json.dumps(s.value)}'" for s in _STATUSES))

# KEYS[1]: the hash; KEYS[2]: the index of its (queued) status. ARGV[1]: id; ARGV[2]: created_at;
# ARGV[3]: TTL in ms; ARGV[4]: the channel; ARGV[5..]: field, JSON value.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 1
"""

# KEYS[1]: the hash; KEYS[2..6]: the status indexes. ARGV[1]: id; ARGV[2]: the channel.
# The id leaves every index even when Redis has already expired the hash.
_DELETE = """
for i = 2, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('PUBLISH', ARGV[2], ARGV[1])
return 1
"""

T = TypeVar("T")


class RedisSessionStore:
    """Sessions in Redis, shared by every process of a distributed deployment.

    Args:
        client: a `redis.Redis` (its own connection pool; safe across threads and forks).
        ttl_seconds: how long Redis keeps a session's hash after its creation (the session TTL
            plus a grace period, so that the sweeper normally removes it, files and all, first).
    """

    def __init__(self, client: Any, ttl_seconds: float) -> None:
        self.client = client
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self._update = client.register_script(_UPDATE)
        self._create = client.register_script(_CREATE)
        self._delete = client.register_script(_DELETE)
        self._failing = False

    @staticmethod
    def key(session_id: str) -> str:
        return f"{PREFIX}session:{session_id}"

    @staticmethod
    def index(status: SessionStatus) -> str:
        return f"{PREFIX}sessions:{status.value}"

    def _indexes(self) -> list[str]:
        return [self.index(s) for s in _STATUSES]

    def _call(self, operation: Callable[[], T]) -> T:
        """Run a Redis operation; a lost connection becomes StoreUnavailable (a 503)."""
        import redis

        try:
            result = operation()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if not self._failing:
                logger.error("Redis cannot be reached: %s", exc)
            self._failing = True
            raise StoreUnavailable() from exc
        if self._failing:
            logger.warning("Redis answers again")
        self._failing = False
        return result

    @property
    def healthy(self) -> bool:
        return not self._failing

    def flush(self, timeout: float | None = None) -> bool:
        # Each change is in Redis when its call returns; how durable Redis itself is (AOF,
        # replicas) is its configuration's business (README "Scaling out").
        return True

    def close(self, timeout: float = 2.0) -> None:
        self.client.close()

    def ping(self) -> None:
        """Raise StoreUnavailable when Redis does not answer."""
        self._call(self.client.ping)

    def create_session(
        self,
        video_path: str,
        analysis_type: str,
        params: dict[str, Any],
        *,
        session_id: str | None = None,
        work_dir: str | None = None,
    ) -> str:
        """Record a new queued session (see `SessionManager.create_session`).

        Raises:
            ValueError: `session_id` is already taken.
            StoreUnavailable: Redis cannot be reached.
        """
        session = Session(
            id=session_id or str(uuid.uuid4()),
            analysis_type=analysis_type,
            params=params,
            video_path=str(video_path),
            work_dir=work_dir,
        )
        fields = _encode(session.__dict__)
        created = self._call(
            lambda: self._create(
                keys=[self.key(session.id), self.index(session.status)],
                args=[session.id, session.created_at, self.ttl_ms, CHANNEL, *fields],
            )
        )
        if not created:
            raise ValueError(f"session {session.id} already exists")
        return session.id

    def get_session(self, session_id: str, *, with_result: bool = True) -> Session | None:
        """The session (without its result unless asked), or None."""
        names = _FIELDS if with_result else tuple(f for f in _FIELDS if f != "result")
        values = self._call(lambda: self.client.hmget(self.key(session_id), names))
        return _decode(names, values)

    def update_session(
        self,
        session_id: str,
        *,
        expect_status: SessionStatus | frozenset[SessionStatus] | None = None,
        **updates: Any,
    ) -> bool:
        """Change fields of a session, atomically in Redis (see `SessionManager.update_session`).
        A terminal status never changes.

        Raises:
            ValueError: an unknown field or status.
            StoreUnavailable: Redis cannot be reached.
        """
        expect_status = checked_update(updates, expect_status)
        expected = "\n".join(json.dumps(s.value) for s in expect_status or ())
        args = [expected, json.dumps(time.time()), CHANNEL, session_id, *_encode(updates)]
        changed = self._call(
            lambda: self._update(keys=[self.key(session_id), *self._indexes()], args=args)
        )
        return bool(changed)

    def delete_session(self, session_id: str) -> bool:
        """Forget a session (and its index entries); False when its hash was already gone."""
        deleted = self._call(
            lambda: self._delete(
                keys=[self.key(session_id), *self._indexes()], args=[session_id, CHANNEL]
            )
        )
        return bool(deleted)

    def _ids(self, status: SessionStatus | None) -> list[str]:
        statuses = _STATUSES if status is None else (status,)
        with self.client.pipeline(transaction=False) as pipe:
            for s in statuses:
                pipe.zrange(self.index(s), 0, -1, withscores=True)
            batches = self._call(pipe.execute)
        entries = sorted((score, _text(i)) for batch in batches for i, score in batch)
        return [session_id for _, session_id in entries]

    def list_sessions(self, status: SessionStatus | None = None) -> list[Session]:
        """Every session (or those in `status`), oldest first."""
        ids = self._ids(status)
        with self.client.pipeline(transaction=False) as pipe:
            for session_id in ids:
                pipe.hmget(self.key(session_id), _FIELDS)
            rows = self._call(pipe.execute) if ids else []
        sessions = (_decode(_FIELDS, row) for row in rows)
        return [s for s in sessions if s is not None]

    def expired(self, now: float, ttl_seconds: float) -> list[str]:
        """Ids of the sessions created before `now - ttl_seconds` (their hash may be gone)."""
        cutoff = now - ttl_seconds
        with self.client.pipeline(transaction=False) as pipe:
            for s in _STATUSES:
                pipe.zrangebyscore(self.index(s), "-inf", f"({cutoff}")
            batches = self._call(pipe.execute)
        return [_text(i) for batch in batches for i in batch]

    def count(self, status: SessionStatus | None = None) -> int:
        statuses = _STATUSES if status is None else (status,)
        with self.client.pipeline(transaction=False) as pipe:
            for s in statuses:
                pipe.zcard(self.index(s))
            return sum(self._call(pipe.execute))

    def __len__(self) -> int:
        return self.count()


def _encode(fields: dict[str, Any]) -> list[str]:
    pairs: list[str] = []
    for name, value in fields.items():
        if isinstance(value, SessionStatus):
            value = value.value
        elif isinstance(value, tuple):
            value = list(value)
        pairs += [name, json.dumps(value, separators=(",", ":"))]
    return pairs


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


_MEMBER = {name: f'"{name}":'.encode() for name in _FIELDS}


def _decode(names: tuple[str, ...], values: list[bytes | None]) -> Session | None:
    if not values or values[0] is None:  # "id" first: no id, no session
        return None
    # Each value is a JSON text of its own (`_encode`, and numbers from the Lua script), so the
    # hash is read as one JSON object: one parse, not one per field (23 against 77 µs for the
    # 15 fields a status poll reads).
    members = b",".join(
        _MEMBER[name] + (value.encode() if isinstance(value, str) else value)
        for name, value in zip(names, values, strict=True)
        if value is not None
    )
    fields = json.loads(b"{" + members + b"}")
    fields["status"] = SessionStatus(fields["status"])
    fields["artifacts"] = tuple(fields.get("artifacts", ()))
    return Session(**fields)
