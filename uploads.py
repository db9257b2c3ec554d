"""Receive a multipart upload straight to disk, bounded in size and in memory.

Starlette would parse the whole body into a spooled temporary file before the endpoint runs, so a
size limit checked there comes after the bytes are on disk. Here the body is parsed as it
arrives: the file part goes to the destination path in 4 MiB writes made off the event loop, the
size limit stops it the moment it is passed, and the first bytes are shown to a check (is this a
video container?) before the rest is read. Memory stays flat for a body of any size.

A client cannot hold or fill the server with a body either: one that stalls is cut off, one that
ends without its closing boundary is refused, bytes after the closing boundary are read only up to
a small bound, and writes stop before the disk's free space falls below a reserve.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import anyio
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

logger = logging.getLogger(__name__)

# Each write is a hop to a worker thread, and under load a hop waits for a CPU: fewer, larger ones.
_FLUSH_BYTES = 4 * 1024 * 1024
# Enough for every container signature, MPEG-TS's third sync byte (offset 376) included.
_HEAD_BYTES = 512
_MAX_FIELDS = 16
_MAX_FIELD_BYTES = 64 * 1024
# RFC 2046 allows an epilogue after the closing boundary (browsers and curl send a CRLF at most).
# Reading on without a bound would stream any amount of data past the size limit.
_EPILOGUE_BYTES = 16 * 1024


class UploadError(Exception):
    """The upload cannot be accepted; the message is safe to show to the client."""


class MalformedUpload(UploadError):
    """Not a multipart form we understand, or not the fields we expect."""


class UploadTooLarge(UploadError):
    """The file is larger than the limit."""


class StorageFull(UploadError):
    """The disk is full, or would fall below the free space kept in reserve."""


class UploadStalled(UploadError):
    """Nothing arrived for the idle time: the client stalled or vanished without closing."""


@dataclass
class ReceivedUpload:
    """What arrived: the file (already at `path`) and the plain form fields."""

    path: Path
    size: int
    head: bytes
    filename: str | None
    fields: dict[str, str] = field(default_factory=dict)


async def receive_upload(
    stream: AsyncIterator[bytes],
    content_type: str | None,
    dest: Path,
    *,
    max_bytes: int,
    file_field: str = "video",
    check_head: Callable[[bytes], None] | None = None,
    idle_seconds: float | None = None,
    reserve_bytes: int | None = None,
) -> ReceivedUpload:
    """Parse a multipart body from `stream`, writing its one file part to `dest`.

    Args:
        stream: the request body, chunk by chunk.
        content_type: the request's Content-Type header (it carries the boundary).
        dest: where the file goes; its folder must exist. Removed again on any error.
        max_bytes: the largest file accepted.
        file_field: the form field that must hold the file.
        check_head: called once with the file's first bytes (up to 512); raising there stops
            the upload before the rest is read.
        idle_seconds: the longest wait for the next chunk of the body (None: no limit).
        reserve_bytes: free space on `dest`'s file system that the file must leave (None: no
            check beyond the disk really filling up).

    Returns:
        The received upload.

    Raises:
        MalformedUpload: not multipart, no boundary, broken body, a body that ends before its
            closing boundary or goes on too long after it, no file in `file_field`, more than
            one file, or too many / too large plain fields.
        UploadTooLarge: the file passed `max_bytes`.
        StorageFull: the disk is full, or writing on would leave less than `reserve_bytes`.
        UploadStalled: nothing arrived for `idle_seconds`.
        Whatever `check_head` raises.
    """
    receiver = _Receiver(dest, max_bytes, file_field, check_head, idle_seconds, reserve_bytes)
    try:
        await receiver.run(stream, content_type)
    except BaseException:
        await receiver.close()
        await anyio.to_thread.run_sync(_unlink_quietly, dest)
        raise
    await receiver.close()
    if receiver.upload is None:
        await anyio.to_thread.run_sync(_unlink_quietly, dest)
        raise MalformedUpload(f"Missing the '{file_field}' file field")
    return receiver.upload


class _Receiver:
    """The multipart callbacks, and the buffered writes they lead to."""

    def __init__(
        self,
        dest: Path,
        max_bytes: int,
        file_field: str,
        check_head: Callable[[bytes], None] | None,
        idle_seconds: float | None = None,
        reserve_bytes: int | None = None,
    ) -> None:
        self.dest = dest
        self.max_bytes = max_bytes
        self.file_field = file_field
        self.check_head = check_head
        self.idle_seconds = idle_seconds
        self.reserve_bytes = reserve_bytes
        self.upload: ReceivedUpload | None = None
        self.fields: dict[str, str] = {}
        self._file: BinaryIO | None = None
        self._buffer = bytearray()
        self._head_checked = False
        self._in_file = False
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._field_name = ""
        self._field_data = bytearray()
        self._parts = 0
        self._ended = False  # the closing boundary has been seen

    async def run(self, stream: AsyncIterator[bytes], content_type: str | None) -> None:
        mime, options = parse_options_header(content_type or "")
        if mime != b"multipart/form-data":
            raise MalformedUpload("Send the video as multipart/form-data")
        boundary = options.get(b"boundary")
        if not boundary:
            raise MalformedUpload("Missing boundary in multipart/form-data")
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
            # Our own limit (_on_header_value) comes first and says what is wrong; the
            # parser's default (4 KiB) would refuse a long but harmless file name.
            max_header_size=2 * _MAX_FIELD_BYTES,
        )
        chunks = aiter(stream)
        epilogue = 0
        try:
            while (chunk := await self._next_chunk(chunks)) is not None:
                if self._ended:
                    # The parser would skip these bytes, but each one is still read off the
                    # network and counted against nothing: stop after a few.
                    epilogue += len(chunk)
                    if epilogue > _EPILOGUE_BYTES:
                        raise MalformedUpload(
                            "Unexpected data after the end of the multipart/form-data body"
                        )
                    continue
                parser.write(chunk)
                await self._drain()
        except FormParserError as exc:
            raise MalformedUpload("Invalid multipart/form-data body") from exc
        if not self._ended:
            # python-multipart's finalize() does not check this (a TODO there): without the
            # check, a body cut short would be taken for a whole, shorter file.
            raise MalformedUpload(
                "The multipart/form-data body ended before its closing boundary: "
                "the upload is incomplete"
            )
        await self._drain(final=True)

    async def _next_chunk(self, chunks: AsyncIterator[bytes]) -> bytes | None:
        """The body's next chunk, None at its end; UploadStalled after `idle_seconds` of nothing."""
        try:
            with anyio.fail_after(self.idle_seconds):
                return await anext(chunks)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise UploadStalled(
                f"The upload stalled: nothing arrived for {self.idle_seconds:g} seconds"
            ) from None

    # Parser callbacks: plain, synchronous and cheap; the file I/O happens in _drain.
    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > _MAX_FIELDS:
            raise MalformedUpload("Too many form fields")
        self._disposition = b""
        self._field_data = bytearray()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        if len(self._header_value) > _MAX_FIELD_BYTES:
            raise MalformedUpload("Form part header too long")

    def _on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name")
        if name is None:
            raise MalformedUpload("A form part has no name")
        self._field_name = name.decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is None:
            self._in_file = False
            return
        if self._field_name != self.file_field:
            raise MalformedUpload(f"Unexpected file field '{self._field_name[:64]}'")
        if self.upload is not None:
            raise MalformedUpload(f"Send exactly one file in the '{self.file_field}' field")
        self._in_file = True
        # The client's file name is kept only as information: it never becomes part of a path.
        self.upload = ReceivedUpload(
            self.dest, 0, b"", filename.decode("utf-8", "replace")[:255], self.fields
        )

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file:
            if len(self._field_data) + end - start > _MAX_FIELD_BYTES:
                raise MalformedUpload(f"Form field '{self._field_name[:64]}' is too long")
            self._field_data += data[start:end]
            return
        assert self.upload is not None
        self.upload.size += end - start
        if self.upload.size > self.max_bytes:
            raise UploadTooLarge(f"File too large: the limit is {self.max_bytes // 2**20} MB")
        # A memoryview appends without first copying the slice: 20 MB is copied once, not twice.
        self._buffer += memoryview(data)[start:end]

    def _on_end(self) -> None:
        self._ended = True

    def _on_part_end(self) -> None:
        if not self._in_file:
            if self._field_name in self.fields:
                raise MalformedUpload(f"Form field '{self._field_name[:64]}' given twice")
            self.fields[self._field_name] = self._field_data.decode("utf-8", "replace")
        self._in_file = False

    async def _drain(self, final: bool = False) -> None:
        if self.upload is None:
            return
        if not self._head_checked and (len(self._buffer) >= _HEAD_BYTES or final):
            self._head_checked = True
            self.upload.head = bytes(self._buffer[:_HEAD_BYTES])
            if self.check_head is not None:
                self.check_head(self.upload.head)
        if self._buffer and (len(self._buffer) >= _FLUSH_BYTES or final):
            # Hand the buffer itself to the writer thread (no copy) and start a fresh one.
            data, self._buffer = self._buffer, bytearray()
            await anyio.to_thread.run_sync(self._write, data)
        elif final and self._file is None:
            await anyio.to_thread.run_sync(self._write, b"")  # an empty file is still a file

    def _write(self, data: bytes | bytearray) -> None:
        if self.reserve_bytes is not None:
            # Checked before each 4 MiB write: the reserve holds while the disk fills up from
            # other uploads and analyses too, not only at the start.
            if free_bytes(self.dest.parent) - len(data) < self.reserve_bytes:
                raise StorageFull("Not enough disk space to store the video")
        try:
            if self._file is None:
                self._file = open(self.dest, "xb")  # noqa: SIM115 - closed in close()
            self._file.write(data)
        except OSError as exc:
            # EFBIG: a file-size limit (RLIMIT_FSIZE, a quota) is a full disk to this upload.
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise StorageFull("Not enough disk space to store the video") from exc
            raise

    async def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            await anyio.to_thread.run_sync(_close_quietly, file)


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged process may still write on `folder`'s file system."""
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def _close_quietly(file: object) -> None:
    try:
        file.close()  # type: ignore[attr-defined]
    except OSError:
        logger.warning("closing an upload failed", exc_info=True)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
