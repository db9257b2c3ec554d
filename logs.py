"""Log output: plain text, or one JSON object per line carrying the request and session ids.

It owns the two context variables that say which request and which session a log line belongs
to. The request middleware (`observability.py`) sets them per request; the task pool runs each
task in a context bound to its session id, so the analysis thread's lines carry it too. With
`LOG_FORMAT=json`, a log search for a session id finds its whole life: the upload, the analysis
start, its progress, how it ended, and its cleanup or expiry, as well as the requests that
touched it (uvicorn's access lines included).

`configure` is called once, from `app.configure_logging`; nothing else touches the handlers.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
session_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("session_id", default=None)
_CONTEXT = {"request_id": request_id, "session_id": session_id}

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The handler this module installs on the root logger, found again by name so that configuring
# twice (a second app in one process, as in the tests) replaces it instead of adding another.
_HANDLER_NAME = "service"
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
# uvicorn adds a copy of its message with terminal colour codes.
_IGNORED_EXTRAS = frozenset({"color_message"})


def session_context(session: str) -> contextvars.Context:
    """A copy of the current context with `session_id` bound, to run a task in.

    Worker threads do not inherit the submitter's context; running the task in this one gives
    its log lines the session id (and the id of the request that queued it)."""
    context = contextvars.copy_context()
    context.run(session_id.set, session)
    return context


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message, the request
    and session ids when there are any, the fields passed with `extra=`, and the exception's
    traceback when the record has one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, variable in _CONTEXT.items():
            # An id passed with `extra=` wins over the context's.
            value = getattr(record, name, None) or variable.get()
            if value is not None:
                entry[name] = value
        for name, value in record.__dict__.items():
            if name not in _RECORD_ATTRIBUTES and name not in _IGNORED_EXTRAS and name not in entry:
                entry[name] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        # default=str: an extra that is not JSON (a Path, an enum) must not lose the line.
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(log_format: str, level: str) -> None:
    """Install the service's handler on the root logger.

    Args:
        log_format: "json" (one object per line, on stdout, where Railway reads it) or "text"
            (the human format on stderr, as before).
        level: the root logger's level name.

    With "json", uvicorn's own loggers lose their handlers and propagate to the root, so its
    start-up, error and access lines are JSON objects too.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    handler: logging.Handler
    if log_format == "json":
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        for name in _UVICORN_LOGGERS:
            uvicorn_logger = logging.getLogger(name)
            uvicorn_logger.handlers.clear()
            uvicorn_logger.propagate = True
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.set_name(_HANDLER_NAME)
    root.addHandler(handler)
    root.setLevel(level)
