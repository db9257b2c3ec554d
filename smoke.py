"""Smoke test of a running deployment: the specification's manual test flows, against any URL.

    python -m smoke https://your-app.up.railway.app [--api-key KEY]
    make smoke URL=https://your-app.up.railway.app [API_KEY=KEY]

It checks health; the happy path (upload a clip it writes itself, follow the event stream to
`completed`, read the results, fetch a thumbnail, clean up, see the session gone); the
cancellation of a longer clip; and the error cases (unknown session, results before completion,
not a video, a truncated video). Each step prints one line with its status and latency. The
first failure stops the run with the step, the request, the status and the body that failed,
and the exit status 1. Every session it created is cleaned up on the way out, whatever
happened, and every wait has a deadline.

It uses only the standard library's HTTP client and the runtime requirements (OpenCV writes the
clips), so it runs from any checkout that ran `make install`, and it imports nothing from the
service: it sees the deployment exactly as a client does.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TextIO
from urllib.parse import urlsplit

import cv2
import numpy as np

API = "/api/v1/video"
# Per request; an upload gets longer, as it may cross a slow link.
REQUEST_TIMEOUT = 30.0
UPLOAD_TIMEOUT = 120.0
# Silence allowed between two lines of the event stream: the server sends a heartbeat every 15 s.
EVENT_READ_TIMEOUT = 30.0
# Whole-flow deadlines, in seconds.
ANALYSIS_DEADLINE = 180.0
PROCESSING_DEADLINE = 60.0
POLL_SECONDS = 0.1
# A few seconds for the happy path; two minutes for the cancellation, so that it is still being
# analysed when the cancel arrives (about 3 s of analysis on a busy 2-core machine, 3 MB).
SHORT_CLIP_SECONDS = 4
LONG_CLIP_SECONDS = 120
JPEG_MAGIC = b"\xff\xd8\xff"
_BODY_SHOWN = 2000


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def text(self) -> str:
        text = self.body.decode("utf-8", "replace")
        return text if len(text) <= _BODY_SHOWN else text[:_BODY_SHOWN] + " …"


class SmokeFailure(Exception):
    """A step did not get what it expected; `report()` says what, for a person."""

    def __init__(
        self, step: str, request: str, problem: str, response: Response | None = None
    ) -> None:
        super().__init__(f"{step}: {problem}")
        self.step, self.request, self.problem, self.response = step, request, problem, response

    def report(self) -> str:
        lines = [
            f"FAIL  {self.step}",
            f"      request:  {self.request}",
            f"      problem:  {self.problem}",
        ]
        if self.response is not None:
            got = f"{self.response.status} after {self.response.seconds * 1000:.1f} ms"
            lines += [f"      status:   {got}", f"      body:     {self.response.text()}"]
        return "\n".join(lines)


class Client:
    """HTTP/1.1 to one deployment with http.client: a fresh connection per request, opened
    before the clock starts, so a latency is the request's, not the TCP or TLS handshake's."""

    def __init__(self, url: str, api_key: str | None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.scheme, self.netloc = parts.scheme, parts.netloc
        self.prefix = parts.path.rstrip("/")
        self.api_key = api_key

    def url(self, target: str) -> str:
        """The absolute URL of a path of the deployment (or of an absolute URL, as it is)."""
        if target.startswith(("http://", "https://")):
            return target
        return f"{self.scheme}://{self.netloc}{self.prefix}{target}"

    def _connection(self, url: str, timeout: float) -> tuple[http.client.HTTPConnection, str, bool]:
        parts = urlsplit(url)
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(
                parts.netloc, timeout=timeout, context=ssl.create_default_context()
            )
        else:
            connection = http.client.HTTPConnection(parts.netloc, timeout=timeout)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # The key goes to this deployment only, never to a host an artifact URL points at.
        return connection, target, parts.netloc == self.netloc

    def _headers(self, own_host: bool, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {"User-Agent": "workout-video-smoke/1", **(extra or {})}
        if self.api_key and own_host:
            headers["X-API-Key"] = self.api_key
        return headers

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> Response:
        """Send one request and read the whole answer.

        Raises:
            OSError, http.client.HTTPException: no answer (refused, timed out, cut off).
        """
        connection, path, own_host = self._connection(self.url(target), timeout)
        try:
            connection.connect()
            started = time.perf_counter()
            connection.request(method, path, body=body, headers=self._headers(own_host, headers))
            answer = connection.getresponse()
            data = answer.read()
            seconds = time.perf_counter() - started
            return Response(
                answer.status, {k.lower(): v for k, v in answer.getheaders()}, data, seconds
            )
        finally:
            connection.close()

    def events(
        self, target: str, on_event: Callable[[str, Any], bool], deadline: float
    ) -> Response:
        """Read a Server-Sent Events stream, calling `on_event(event, data)` for each event
        until it answers True, the stream ends, or `deadline` (time.monotonic) passes.

        Returns:
            The answer; its body holds what was read (the events' raw text).

        Raises:
            TimeoutError: the deadline passed, or the stream was silent too long.
            OSError, http.client.HTTPException: no answer.
        """
        connection, path, own_host = self._connection(self.url(target), EVENT_READ_TIMEOUT)
        try:
            connection.connect()
            started = time.perf_counter()
            headers = self._headers(own_host, {"Accept": "text/event-stream"})
            connection.request("GET", path, headers=headers)
            answer = connection.getresponse()
            answer_headers = {k.lower(): v for k, v in answer.getheaders()}
            if answer.status != 200:
                data = answer.read()
                return Response(answer.status, answer_headers, data, time.perf_counter() - started)
            seen: list[bytes] = []
            event, data_lines = "message", []
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError("the analysis did not end before the deadline")
                raw = answer.readline()
                if not raw:
                    break  # the server ended the stream
                seen.append(raw)
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith(":"):
                    continue  # a comment: the heartbeat
                if line:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "event":
                        event = value
                    elif name == "data":
                        data_lines.append(value)
                    continue
                if data_lines:
                    text = "\n".join(data_lines)
                    try:
                        payload: Any = json.loads(text)
                    except ValueError:
                        payload = text  # not the status JSON: on_event says what it expected
                    if on_event(event, payload):
                        break
                event, data_lines = "message", []
            return Response(200, answer_headers, b"".join(seen), time.perf_counter() - started)
        finally:
            connection.close()


def write_clip(
    path: Path, seconds: float, fps: int = 15, size: tuple[int, int] = (320, 240)
) -> Path:
    """Write an MP4 (MPEG-4 Part 2) of a ball swinging left and right over a checkerboard,
    once every 1.2 s: motion for the highlights, repetitions for the workout analysis."""
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write an MP4 here")
    rows, cols = np.mgrid[0:height, 0:width]
    board = (((rows // 20 + cols // 20) % 2) * 40 + 50).astype(np.uint8)
    background = np.dstack([board, board, board])
    try:
        for i in range(round(seconds * fps)):
            frame = background.copy()
            x = int(width / 2 + 0.3 * width * np.sin(2 * np.pi * (i / fps) / 1.2))
            cv2.circle(frame, (x, height // 2), height // 8, (40, 200, 240), -1)
            writer.write(frame)
    finally:
        writer.release()
    return path


def multipart(fields: dict[str, str], filename: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with `fields` and the file in the `video` field, as curl -F
    sends it; returns (body, content type)."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@dataclass
class Smoke:
    """The flows, step by step, printing a line per step to `out`."""

    client: Client
    out: TextIO = field(default_factory=lambda: sys.stdout)
    steps: int = 0
    # Sessions created and not yet cleaned up: removed on the way out, whatever happened.
    open_sessions: list[str] = field(default_factory=list)

    # -- the flows ---------------------------------------------------------------------------

    def run(self, folder: Path) -> None:
        """Every flow in order. At the first step that fails, prints its report, cleans up and
        raises SmokeFailure."""
        try:
            self.health()
            # Written after health, so an unreachable deployment fails at once.
            short = write_clip(folder / "short.mp4", SHORT_CLIP_SECONDS)
            long = write_clip(folder / "long.mp4", LONG_CLIP_SECONDS)
            self.happy_path(short)
            self.cancellation(long)
            self.error_cases(short, folder)
        except SmokeFailure as failure:
            print(failure.report(), file=self.out, flush=True)
            raise
        finally:
            self.clean_up_leftovers()

    def health(self) -> None:
        response = self.call("health", "GET", "/health", 200)
        if (response.json() or {}).get("status") != "healthy":
            self.fail("health", "GET /health", "the service does not say it is healthy", response)

    def happy_path(self, clip: Path) -> None:
        session_id, answer = self.upload("happy path: upload (full)", clip, "full")
        events_url = answer.get("eventsUrl") or f"{API}/events/{session_id}"
        self.follow_to_completion("happy path: event stream to completed", events_url)

        step = "happy path: results"
        response = self.call(step, "GET", f"{API}/results/{session_id}", 200, note=_summary)
        data = (response.json() or {}).get("data") or {}
        highlights = data.get("highlights") or []
        if data.get("analysis_type") != "full" or "workout" not in data or not highlights:
            self.fail(
                step,
                f"GET {API}/results/{session_id}",
                "expected highlights and a workout",
                response,
            )
        thumbnail = highlights[0].get("thumbnail_url")
        if not thumbnail:
            self.fail(
                step,
                f"GET {API}/results/{session_id}",
                "the first highlight has no thumbnail_url",
                response,
            )

        step = "happy path: thumbnail is a JPEG"
        response = self.call(
            step, "GET", thumbnail, 200, note=lambda r: f"{len(r.body) / 1000:.1f} kB"
        )
        content_type = response.headers.get("content-type", "")
        if not response.body.startswith(JPEG_MAGIC) or not content_type.startswith("image/jpeg"):
            self.fail(
                step, f"GET {thumbnail}", f"not a JPEG (content type {content_type!r})", response
            )

        self.cleanup("happy path: cleanup", session_id)
        self.call("happy path: status after cleanup", "GET", f"{API}/status/{session_id}", 404)

    def cancellation(self, clip: Path) -> None:
        session_id, _ = self.upload("cancellation: upload (long clip)", clip, "full")
        status_url = f"{API}/status/{session_id}"
        self.call(
            "errors: results before completion",
            "GET",
            f"{API}/results/{session_id}",
            400,
            note=_detail,
        )
        self.wait_for_processing("cancellation: status reaches processing", status_url)
        step = "cancellation: cancel"
        response = self.call(step, "POST", f"{API}/cancel/{session_id}", 200)
        if (response.json() or {}).get("status") != "cancelled":
            self.fail(
                step,
                f"POST {API}/cancel/{session_id}",
                "the answer is not status cancelled",
                response,
            )
        self.call(
            "cancellation: cancel again", "POST", f"{API}/cancel/{session_id}", 409, note=_detail
        )
        self.call("cancellation: results", "GET", f"{API}/results/{session_id}", 400, note=_detail)
        self.cleanup("cancellation: cleanup", session_id)

    def error_cases(self, clip: Path, folder: Path) -> None:
        unknown = str(uuid.uuid4())
        self.call("errors: unknown session", "GET", f"{API}/status/{unknown}", 404, note=_detail)
        not_video = folder / "notes.mp4"
        not_video.write_bytes(b"This is a text file, not a video.\n" * 40)
        self.upload("errors: not a video", not_video, "highlights", expect=415)
        data = clip.read_bytes()
        truncated = folder / "truncated.mp4"
        truncated.write_bytes(data[: len(data) // 2])
        self.upload("errors: truncated video", truncated, "highlights", expect=422)

    # -- steps -------------------------------------------------------------------------------

    def call(
        self,
        step: str,
        method: str,
        target: str,
        expect: int,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT,
        note: Callable[[Response], str] | None = None,
    ) -> Response:
        """One request; prints its line, or raises SmokeFailure when the status is not
        `expect` (or an error answer is not `{"detail": "<sentence>"}`)."""
        request = f"{method} {self.client.url(target)}"
        try:
            response = self.client.request(method, target, body, headers, timeout)
        except (OSError, http.client.HTTPException) as exc:
            self.fail(step, request, f"no answer: {type(exc).__name__}: {exc}")
        if response.status != expect:
            self.fail(step, request, f"expected {expect}, got {response.status}", response)
        if expect >= 400 and not isinstance((response.json() or {}).get("detail"), str):
            self.fail(step, request, 'the error is not JSON {"detail": "..."}', response)
        self.passed(
            step, response.status, response.seconds, method, target, note(response) if note else ""
        )
        return response

    def upload(
        self, step: str, clip: Path, analysis_type: str, expect: int = 202
    ) -> tuple[str, dict[str, Any]]:
        """Upload `clip`; returns (session id, answer) when accepted. A session the server made
        is remembered for clean-up even when the step fails."""
        body, content_type = multipart(
            {"analysis_type": analysis_type}, clip.name, clip.read_bytes()
        )
        request = f"POST {self.client.url(f'{API}/upload')}"
        try:
            response = self.client.request(
                "POST", f"{API}/upload", body, {"Content-Type": content_type}, UPLOAD_TIMEOUT
            )
        except (OSError, http.client.HTTPException) as exc:
            self.fail(step, request, f"no answer: {type(exc).__name__}: {exc}")
        answer = response.json() if isinstance(response.json(), dict) else {}
        session_id = answer.get("sessionId") if response.status == 202 else None
        if isinstance(session_id, str):
            self.open_sessions.append(session_id)
        if response.status != expect:
            self.fail(step, request, f"expected {expect}, got {response.status}", response)
        if expect == 202 and not isinstance(session_id, str):
            self.fail(step, request, "the answer has no sessionId", response)
        if expect >= 400 and not isinstance(answer.get("detail"), str):
            self.fail(step, request, 'the error is not JSON {"detail": "..."}', response)
        note = f"session {session_id}" if session_id else _detail(response)
        self.passed(step, response.status, response.seconds, "POST", f"{API}/upload", note)
        return str(session_id), answer

    def follow_to_completion(self, step: str, events_url: str) -> None:
        seen: list[dict[str, Any]] = []
        request = f"GET {self.client.url(events_url)}"

        def on_event(event: str, data: Any) -> bool:
            if event != "message" or not isinstance(data, dict):
                raise SmokeFailure(step, request, f"unexpected {event!r} event: {data}")
            seen.append(data)
            return data.get("status") in ("completed", "failed", "cancelled")

        try:
            response = self.client.events(
                events_url, on_event, time.monotonic() + ANALYSIS_DEADLINE
            )
        except (OSError, http.client.HTTPException) as exc:
            self.fail(step, request, f"{type(exc).__name__}: {exc}")
        if response.status != 200:
            self.fail(step, request, f"expected 200, got {response.status}", response)
        last = seen[-1] if seen else {}
        if last.get("status") != "completed":
            self.fail(
                step, request, f"the stream ended with {json.dumps(last) or 'nothing'}", response
            )
        self.passed(step, 200, response.seconds, "GET", events_url, f"{len(seen)} events")

    def wait_for_processing(self, step: str, status_url: str) -> None:
        started = time.perf_counter()
        deadline = time.monotonic() + PROCESSING_DEADLINE
        while True:
            try:
                response = self.client.request("GET", status_url)
            except (OSError, http.client.HTTPException) as exc:
                self.fail(step, f"GET {self.client.url(status_url)}", f"no answer: {exc}")
            status = (response.json() or {}).get("status")
            if response.status != 200 or status in ("completed", "failed", "cancelled"):
                problem = f"expected a session being analysed, got {response.status} {status}"
                self.fail(step, f"GET {self.client.url(status_url)}", problem, response)
            if status == "processing":
                note = "processing"
                break
            if time.monotonic() > deadline:
                # A busy deployment may keep it queued: cancelling a queued session is a
                # cancellation too, and the step says so.
                note = f"still queued after {PROCESSING_DEADLINE:.0f} s: the server is busy"
                break
            time.sleep(POLL_SECONDS)
        self.passed(step, 200, time.perf_counter() - started, "GET", status_url, note)

    def cleanup(self, step: str, session_id: str) -> None:
        self.call(step, "DELETE", f"{API}/cleanup/{session_id}", 200)
        self.open_sessions.remove(session_id)

    def clean_up_leftovers(self) -> None:
        for session_id in list(self.open_sessions):
            target = f"{API}/cleanup/{session_id}"
            try:
                response = self.client.request("DELETE", target)
            except (OSError, http.client.HTTPException) as exc:
                print(f"WARN  could not clean up session {session_id}: {exc}", file=self.out)
                continue
            if response.status in (200, 404):
                self.open_sessions.remove(session_id)
            print(
                f"      cleanup of session {session_id} left by the failure: {response.status}",
                file=self.out,
            )

    # -- output ------------------------------------------------------------------------------

    def passed(
        self, step: str, status: int, seconds: float, method: str, target: str, note: str
    ) -> None:
        self.steps += 1
        line = f"  ok  {step:<40} {status}  {seconds * 1000:9.1f} ms  {method} {target}"
        print(f"{line}  ({note})" if note else line, file=self.out, flush=True)

    def fail(
        self, step: str, request: str, problem: str, response: Response | None = None
    ) -> NoReturn:
        raise SmokeFailure(step, request, problem, response)


def _detail(response: Response) -> str:
    detail = (response.json() or {}).get("detail", "")
    return str(detail)[:100]


def _summary(response: Response) -> str:
    data = (response.json() or {}).get("data") or {}
    reps = (data.get("workout") or {}).get("total_reps")
    return f"{len(data.get('highlights') or [])} highlights, {reps} reps"


def main(argv: list[str] | None = None) -> int:
    """Run the smoke test; returns the exit status (0 passed, 1 failed, 2 bad arguments)."""
    parser = argparse.ArgumentParser(prog="python -m smoke", description=__doc__.split("\n")[0])
    parser.add_argument("url", help="the deployment, e.g. https://your-app.up.railway.app")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("API_KEY") or None,
        help="sent as X-API-Key (default: the API_KEY environment variable)",
    )
    args = parser.parse_args(argv)
    try:
        client = Client(args.url, args.api_key)
    except ValueError as exc:
        parser.error(str(exc))
    key = "with an API key" if args.api_key else "without an API key"
    print(f"smoke test of {client.url('')} ({key})", flush=True)
    smoke = Smoke(client)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="smoke-") as folder:
        try:
            smoke.run(Path(folder))
        except SmokeFailure as failure:
            print(f"smoke test FAILED at {failure.step!r} after {smoke.steps} steps", flush=True)
            return 1
    print(f"smoke test passed: {smoke.steps} steps in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
