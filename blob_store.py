"""Where a session's files live: its uploaded video and the artifacts (thumbnails, reel) its
analysis writes.

`BlobStore` is what `video_service.py` depends on. Files are named by session id and file name
only (the server makes both), never by a client's path:

- `LocalBlobStore`: a folder, `STORAGE_DIR/<session id>/<name>`, the layout the service has
  always had. The analysis reads the video where it lies and writes its artifacts beside it.
- `S3BlobStore`: an S3-compatible bucket (Railway Buckets, AWS S3, SeaweedFS in the tests),
  keys `<session id>/<name>`. Whoever analyses a video fetches it to a local temporary folder,
  writes the artifacts there, uploads them, and removes every local trace; artifacts are served
  through short-lived presigned URLs. boto3 streams files in parts both ways, so no video is
  ever held whole in memory.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class BlobNotFound(Exception):
    """The session has no file of that name (any more)."""


@dataclass(frozen=True)
class Workspace:
    """Where one analysis reads its video and writes its artifacts, on the local disk."""

    video: Path
    output_dir: Path


class BlobStore(Protocol):
    """The files of each session, by session id and file name."""

    def put_video(self, session_id: str, local: Path) -> str:
        """Store a received video (a local file, named as it should be kept) and remove the
        local copy; returns the reference the session keeps (`Session.video_path`)."""
        ...

    def has(self, session_id: str, name: str) -> bool:
        """True when the session has a file of that name."""
        ...

    def workspace(self, session_id: str, video_name: str) -> AbstractContextManager[Workspace]:
        """The video on the local disk and a folder for the artifacts, for one analysis;
        whatever was fetched or written there is gone when the block ends.

        Raises:
            BlobNotFound: the video is gone.
        """
        ...

    def keep_artifacts(self, session_id: str, workspace: Workspace, names: Iterable[str]) -> None:
        """Store the artifacts an analysis wrote into `workspace.output_dir`."""
        ...

    def delete(self, session_id: str, name: str) -> None:
        """Remove one file of a session (no error when it is already gone)."""
        ...

    def remove(self, session_id: str) -> None:
        """Remove every file of a session (no error when there are none)."""
        ...

    def session_ids(self) -> list[str]:
        """The ids of every session that has files."""
        ...

    def artifact(self, session_id: str, name: str) -> Path | str:
        """Where a client gets an artifact: a local file, or a short-lived URL.

        Raises:
            BlobNotFound: the file is gone.
        """
        ...


def _is_uuid(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False


class LocalBlobStore:
    """A session's files in `root/<session id>/`; `root` is STORAGE_DIR."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, session_id: str) -> Path:
        return self.root / session_id

    def put_video(self, session_id: str, local: Path) -> str:
        # Uploads are received into the session's own folder: the video is already in place.
        target = self.folder(session_id) / local.name
        if local != target:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.replace(local, target)
        return str(target)

    def has(self, session_id: str, name: str) -> bool:
        return (self.folder(session_id) / name).is_file()

    @contextmanager
    def workspace(self, session_id: str, video_name: str) -> Iterator[Workspace]:
        video = self.folder(session_id) / video_name
        if not video.is_file():
            raise BlobNotFound(video_name)
        yield Workspace(video, video.parent)

    def keep_artifacts(self, session_id: str, workspace: Workspace, names: Iterable[str]) -> None:
        pass  # written in place

    def delete(self, session_id: str, name: str) -> None:
        try:
            (self.folder(session_id) / name).unlink()
        except FileNotFoundError:
            pass

    def remove(self, session_id: str) -> None:
        shutil.rmtree(self.folder(session_id), ignore_errors=True)

    def session_ids(self) -> list[str]:
        # Only server-made (uuid) names are ours: STORAGE_DIR may hold other things.
        if not self.root.is_dir():
            return []
        return [e.name for e in self.root.iterdir() if e.is_dir() and _is_uuid(e.name)]

    def artifact(self, session_id: str, name: str) -> Path:
        path = self.folder(session_id) / name
        if path.parent != self.folder(session_id):
            raise BlobNotFound(name)
        return path


# Parts of 8 MiB, 4 at once: a video streams through a few tens of MiB of memory at most.
_PART_BYTES = 8 * 1024 * 1024


class S3BlobStore:
    """A session's files under `<session id>/` in one bucket of an S3-compatible service.

    Args:
        scratch: a local folder for the temporary copies an analysis works on.
        url_seconds: how long an artifact's presigned URL stays valid.
        url_style: "path" (endpoint/bucket/key, what SeaweedFS and MinIO expect) or "virtual"
            (bucket.endpoint/key).
        client_options: boto3 client arguments (endpoint_url, credentials, region_name).
    """

    def __init__(
        self,
        bucket: str,
        scratch: Path,
        url_seconds: int,
        url_style: str = "path",
        **client_options: Any,
    ) -> None:
        self.bucket = bucket
        self.url_style = url_style
        self.scratch = scratch
        self.url_seconds = url_seconds
        self._options = client_options
        self._lock = threading.Lock()
        self._client: Any = None
        self._client_pid = 0

    @classmethod
    def from_settings(cls, settings: Any) -> S3BlobStore:
        """The bucket named by the S3_* settings (checked present by `config.Settings`)."""
        return cls(
            settings.s3_bucket,
            Path(settings.storage_dir).resolve(),
            settings.s3_url_seconds,
            settings.s3_url_style,
            endpoint_url=settings.s3_endpoint_url,
            aws_access_key_id=settings.s3_access_key_id.get_secret_value(),
            aws_secret_access_key=settings.s3_secret_access_key.get_secret_value(),
            region_name=settings.s3_region,
        )

    @property
    def client(self) -> Any:
        """A boto3 client of this process: an RQ worker forks a process per job, and a client's
        pooled connections must not be shared across a fork."""
        with self._lock:
            if self._client is None or self._client_pid != os.getpid():
                import boto3
                from botocore.config import Config

                self._client = boto3.client(
                    "s3",
                    config=Config(
                        s3={"addressing_style": self.url_style},
                        retries={"max_attempts": 3, "mode": "standard"},
                        connect_timeout=5,
                        read_timeout=60,
                    ),
                    **self._options,
                )
                self._client_pid = os.getpid()
            return self._client

    def check(self) -> None:
        """Raise when the bucket cannot be reached with these credentials (at start-up)."""
        self.client.head_bucket(Bucket=self.bucket)

    @staticmethod
    def _key(session_id: str, name: str) -> str:
        return f"{session_id}/{name}"

    def _transfer(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=_PART_BYTES, multipart_chunksize=_PART_BYTES, max_concurrency=4
        )

    def _upload(self, local: Path, key: str) -> None:
        content_type = mimetypes.guess_type(local.name)[0] or "application/octet-stream"
        self.client.upload_file(
            str(local),
            self.bucket,
            key,
            ExtraArgs={"ContentType": content_type},
            Config=self._transfer(),
        )

    def put_video(self, session_id: str, local: Path) -> str:
        key = self._key(session_id, local.name)
        try:
            self._upload(local, key)
        finally:
            # The bucket holds it now (or the upload failed): no local trace either way.
            shutil.rmtree(local.parent, ignore_errors=True)
        return key

    def has(self, session_id: str, name: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(session_id, name))
        except ClientError as exc:
            if _missing(exc):
                return False
            raise
        return True

    @contextmanager
    def workspace(self, session_id: str, video_name: str) -> Iterator[Workspace]:
        from botocore.exceptions import ClientError

        self.scratch.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"analysis-{session_id}-", dir=self.scratch))
        try:
            video = folder / video_name
            try:
                self.client.download_file(
                    self.bucket,
                    self._key(session_id, video_name),
                    str(video),
                    Config=self._transfer(),
                )
            except ClientError as exc:
                if _missing(exc):
                    raise BlobNotFound(video_name) from None
                raise
            output = folder / "artifacts"
            output.mkdir()
            yield Workspace(video, output)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def keep_artifacts(self, session_id: str, workspace: Workspace, names: Iterable[str]) -> None:
        for name in names:
            self._upload(workspace.output_dir / name, self._key(session_id, name))

    def delete(self, session_id: str, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(session_id, name))

    def remove(self, session_id: str) -> None:
        # A session has a handful of objects: one listing, one batch delete.
        listing = self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{session_id}/")
        keys = [{"Key": item["Key"]} for item in listing.get("Contents", ())]
        if keys:
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
        shutil.rmtree(self.scratch / session_id, ignore_errors=True)

    def session_ids(self) -> list[str]:
        ids: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Delimiter="/"):
            for prefix in page.get("CommonPrefixes", ()):
                name = prefix["Prefix"].rstrip("/")
                if _is_uuid(name):
                    ids.append(name)
        return ids

    def artifact(self, session_id: str, name: str) -> str:
        # Looked at first, so a file that is gone is our 404, not the bucket's XML.
        if not self.has(session_id, name):
            raise BlobNotFound(name)
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._key(session_id, name)},
            ExpiresIn=self.url_seconds,
        )
        return url


def _missing(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound"}
