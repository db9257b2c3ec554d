"""A minimal HTTP/1.1 keep-alive client on asyncio streams: it measures the server, not itself.

httpx costs the load generator about a millisecond of CPU per request, and on a 2-core machine
that the server also needs, 20 busy httpx clients measure mostly themselves. This client writes
the request line and reads `Content-Length` bytes back, and sends an upload's file with
`loop.sendfile` (zero-copy), so its own cost stays in the tens of microseconds.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path


class Connection:
    """One keep-alive connection to `host:port`; requests on it are sequential."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()
            self._reader = self._writer = None

    async def _response(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        body = await reader.readexactly(length)
        if close:
            await self.close()
        return status, body

    async def request(self, method: str, path: str) -> tuple[int, bytes]:
        """A request without a body; returns (status, body)."""
        reader, writer = await self._open()
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        await writer.drain()
        return await self._response(reader)

    async def upload(
        self, path: str, video: Path, fields: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """POST a multipart form: the plain `fields`, then `video` in the field `video`."""
        boundary = uuid.uuid4().hex
        part = '--{}\r\nContent-Disposition: form-data; name="{}"\r\n\r\n{}\r\n'
        preamble = b"".join(
            part.format(boundary, name, value).encode() for name, value in (fields or {}).items()
        )
        preamble += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="video"; '
            f'filename="{video.name}"\r\nContent-Type: video/mp4\r\n\r\n'
        ).encode()
        trailer = f"\r\n--{boundary}--\r\n".encode()
        size = len(preamble) + os.path.getsize(video) + len(trailer)
        reader, writer = await self._open()
        writer.write(
            (
                f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {size}\r\n\r\n"
            ).encode()
            + preamble
        )
        await writer.drain()
        with video.open("rb") as file:
            await asyncio.get_running_loop().sendfile(writer.transport, file)
        writer.write(trailer)
        await writer.drain()
        return await self._response(reader)
