"""Raw HTTP/1.1 over a socket, for what httpx and curl will not send: unnormalised paths, bodies
that stall, end early or go on after their form, and clients that hang up mid-request."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Answer:
    """What the server sent back."""

    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes
    closed: bool  # the server closed the connection after answering

    def json(self) -> Any:
        return json.loads(self.body)


def multipart(fields: dict[str, str], file: bytes, boundary: str = "b0undary") -> bytes:
    """A whole multipart/form-data body: the plain `fields`, then `file` as the `video` part."""
    out = b""
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    out += f"--{boundary}\r\n".encode()
    out += b'Content-Disposition: form-data; name="video"; filename="v.mp4"\r\n'
    out += b"Content-Type: application/octet-stream\r\n\r\n" + file
    return out + f"\r\n--{boundary}--\r\n".encode()


def request_head(
    method: str, path: str, *, length: int | None = None, boundary: str = "b0undary"
) -> bytes:
    """A request line and headers for a multipart body of `length` bytes (None: chunked)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\n"
    head += f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
    head += "Transfer-Encoding: chunked\r\n" if length is None else f"Content-Length: {length}\r\n"
    return (head + "\r\n").encode()


def chunked(data: bytes) -> bytes:
    """`data` framed as one HTTP chunk."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes] | None:
    """Status, headers and body so far; None until the headers are complete."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = raw[:end].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, raw[end + 4 :]


def _complete(raw: bytes) -> bool:
    parsed = _parse(raw)
    if parsed is None:
        return False
    _, headers, body = parsed
    return "content-length" in headers and len(body) >= int(headers["content-length"])


def exchange(
    port: int, head: bytes, body: Iterable[bytes] = (), timeout: float = 30.0
) -> tuple[int, Answer]:
    """Send `head`, then `body` chunk by chunk, until the server answers; then read the answer.

    Sending stops as soon as the server has answered or closed the connection; when `body` runs
    out first, the connection stays open (a stalled client) until the answer comes.

    Returns:
        How many bytes of `body` the server accepted, and its answer.

    Raises:
        AssertionError: no complete answer within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    sent, received, closed = 0, b"", False
    chunks = iter(body)
    pending = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        sending = True
        while not _complete(received):
            if time.monotonic() > deadline:
                raise AssertionError(f"no complete answer in {timeout:.0f} s: {received[:300]!r}")
            if sending and not pending:
                pending = next(chunks, b"")
                sending = bool(pending)
            readable, writable, _ = select.select([sock], [sock] if sending else [], [], 0.05)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    closed = True
                    break
                received += data
                sending = False  # the server has answered: it reads no more
            elif writable and pending:
                try:
                    count = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    sending, pending = False, b""
                    continue
                sent += count
                pending = pending[count:]
        if not closed:
            closed = _closes_soon(sock)
    parsed = _parse(received)
    if parsed is None:
        raise AssertionError(f"the server closed without an answer: {received[:300]!r}")
    return sent, Answer(*parsed, closed=closed)


def _closes_soon(sock: socket.socket, wait: float = 2.0) -> bool:
    """True when the server closes the connection within `wait` seconds."""
    readable, _, _ = select.select([sock], [], [], wait)
    if not readable:
        return False
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def get(port: int, target: str, timeout: float = 10.0) -> Answer:
    """GET `target` exactly as given (no normalisation, no encoding)."""
    head = f"GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    return exchange(port, head.encode("latin-1"), timeout=timeout)[1]
