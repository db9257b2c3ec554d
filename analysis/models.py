"""The pose estimator's model files: where they live, where they come from, how they are checked.

BlazePose's two networks (a person detector and a landmark model, Apache-2.0) are published by
Google inside package-registry artifacts, and nowhere else these machines can reach:

- PyPI `mediapipe==0.10.21` (the last release whose wheel still ships them) holds the detector
  and the `full` landmark model;
- npm `@mediapipe/pose@0.5.1675469404` holds the `lite` landmark model.

`fetch()` (``python -m analysis.models fetch``, run by ``make models`` and by the Railway build)
takes the files out of those artifacts into ``models/`` at the repository root, or ``$MODELS_DIR``,
and accepts a file only when its sha256 is the one pinned here. It is idempotent (a file already
present with the right hash is not fetched again) and atomic (a temporary file is renamed into
place only once checked). At run time nothing is downloaded: `verified_path()` only locates a file
and checks its hash, and says which command fixes a missing or corrupt one.

The same mechanism fetches the real test footage (``--footage``): a clip of real people from PyPI
`sports2d` (BSD-3-Clause), for the tests only.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Literal

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR_ENV = "MODELS_DIR"
FOOTAGE_DIR_ENV = "FOOTAGE_DIR"
FIX_HINT = "run `make models` (or `python -m analysis.models fetch`)"

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """A registry artifact that holds some of the files."""

    kind: Literal["wheel", "tarball"]
    """`wheel`: fetched with ``pip download``; `tarball`: an npm tarball fetched over HTTPS."""
    spec: str
    """The pip requirement (``name==version``) or the tarball's URL."""
    pip_args: tuple[str, ...] = ()
    """Extra ``pip download`` arguments (platform tags, so any local Python can fetch the wheel)."""


@dataclass(frozen=True)
class Asset:
    """One file we use, where it comes from, and the hash it must have."""

    name: str
    """File name in the destination folder."""
    sha256: str
    source: Source
    member: str
    """Its path inside the source archive."""


MEDIAPIPE_WHEEL = Source(
    "wheel",
    "mediapipe==0.10.21",
    # Wheels exist only for cp39-cp312: naming the tags lets any Python (3.13 too) fetch one.
    (
        "--only-binary=:all:",
        "--python-version=3.12",
        "--implementation=cp",
        "--abi=cp312",
        "--platform=manylinux_2_28_x86_64",
    ),
)
MEDIAPIPE_POSE_NPM = Source(
    "tarball", "https://registry.npmjs.org/@mediapipe/pose/-/pose-0.5.1675469404.tgz"
)
SPORTS2D_WHEEL = Source("wheel", "sports2d==0.8.34")

MODELS: dict[str, Asset] = {
    asset.name: asset
    for asset in (
        Asset(
            "pose_detection.tflite",
            "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
            MEDIAPIPE_WHEEL,
            "mediapipe/modules/pose_detection/pose_detection.tflite",
        ),
        Asset(
            "pose_landmark_full.tflite",
            "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
            MEDIAPIPE_WHEEL,
            "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
        ),
        Asset(
            "pose_landmark_lite.tflite",
            "f17bfbecadb61c3be1baa8b8d851cc6619c870a87167b32848ad20db306b9d61",
            MEDIAPIPE_POSE_NPM,
            "package/pose_landmark_lite.tflite",
        ),
    )
}

FOOTAGE: dict[str, Asset] = {
    "demo.mp4": Asset(
        "demo.mp4",
        "d9a66417185647b112304b57093f0c180f37a768e6a14daca75ca541f3b78039",
        SPORTS2D_WHEEL,
        "Sports2D/Demo/demo.mp4",
    )
}


class ModelFileError(RuntimeError):
    """A model file is missing or is not the file we pinned; the message names the fix."""


class FetchError(RuntimeError):
    """Fetching from a registry failed; the message is one line for a person."""


def models_dir() -> Path:
    """The folder of the model files: ``$MODELS_DIR``, else ``models/`` at the repository root."""
    return Path(os.environ.get(MODELS_DIR_ENV) or REPO_ROOT / "models")


def footage_dir() -> Path:
    """The folder of the test footage: ``$FOOTAGE_DIR``, else ``tests/footage/``."""
    return Path(os.environ.get(FOOTAGE_DIR_ENV) or REPO_ROOT / "tests" / "footage")


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@lru_cache(maxsize=32)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    # Keyed on size and mtime too, so a file replaced in place is hashed again; estimators built
    # for every analysis then pay the ~20 ms of hashing once per process.
    return sha256_of(Path(path))


def verified_path(name: str, directory: Path | None = None) -> Path:
    """Locate a model file and check it against its pinned sha256. Never downloads.

    Args:
        name: a key of `MODELS` (``pose_detection.tflite``...).
        directory: where to look; `models_dir()` when None.

    Returns:
        The file's path.

    Raises:
        ModelFileError: the file is missing, unreadable, or its hash is not the pinned one. The
            message says to run ``make models``.
        KeyError: `name` is not a known model file.
    """
    asset = MODELS[name]
    path = (directory or models_dir()) / name
    try:
        stat = path.stat()
        digest = _cached_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    except FileNotFoundError:
        raise ModelFileError(f"pose model file {path} is missing: {FIX_HINT}") from None
    except OSError as exc:
        raise ModelFileError(f"pose model file {path} cannot be read ({exc}): {FIX_HINT}") from None
    if digest != asset.sha256:
        raise ModelFileError(
            f"pose model file {path} is not the pinned file (sha256 {digest[:12]}…, expected "
            f"{asset.sha256[:12]}…; corrupt or another version): {FIX_HINT}"
        )
    return path


def _is_valid(path: Path, sha256: str) -> bool:
    try:
        return path.is_file() and sha256_of(path) == sha256
    except OSError:
        return False


def _download_wheel(source: Source, into: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "--disable-pip-version-check",
        "--dest",
        str(into),
        *source.pip_args,
        source.spec,
    ]
    logger.info("fetching %s from PyPI", source.spec)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        lines = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        why = lines[-1] if lines else f"pip exited with status {done.returncode}"
        raise FetchError(f"pip could not download {source.spec}: {why}")
    return wheels[0]


def _download_tarball(source: Source, into: Path) -> Path:
    target = into / "package.tgz"
    logger.info("fetching %s", source.spec)
    try:
        with urllib.request.urlopen(source.spec, timeout=60) as response, target.open("wb") as f:
            while chunk := response.read(_CHUNK):
                f.write(chunk)
    except OSError as exc:
        raise FetchError(f"could not download {source.spec}: {exc}") from None
    return target


def _install_member(stream: IO[bytes], asset: Asset, dest: Path) -> Path:
    """Copy one archive member to dest/name through a checked temporary file."""
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{asset.name}.", suffix=".part", dir=dest)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != asset.sha256:
            raise FetchError(
                f"{asset.member} in {asset.source.spec} has sha256 {digest.hexdigest()}, "
                f"not the pinned {asset.sha256}: refusing it"
            )
        final = dest / asset.name
        os.chmod(tmp, 0o644)  # mkstemp makes it private; these are public files
        os.replace(tmp, final)
        return final
    finally:
        tmp.unlink(missing_ok=True)


def _extract(archive: Path, source: Source, assets: list[Asset], dest: Path) -> list[Path]:
    written = []
    try:
        if source.kind == "wheel":
            with zipfile.ZipFile(archive) as wheel:
                for asset in assets:
                    if asset.member not in wheel.namelist():
                        raise FetchError(f"{source.spec} has no file {asset.member}")
                    with wheel.open(asset.member) as stream:
                        written.append(_install_member(stream, asset, dest))
        else:
            with tarfile.open(archive, "r:gz") as tar:
                for asset in assets:
                    if asset.member not in tar.getnames():
                        raise FetchError(f"{source.spec} has no file {asset.member}")
                    member = tar.extractfile(asset.member)
                    if member is None:
                        raise FetchError(f"{asset.member} in {source.spec} is not a file")
                    with member:
                        written.append(_install_member(member, asset, dest))
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise FetchError(f"{source.spec} could not be unpacked: {exc}") from None
    return written


def fetch(assets: Iterable[Asset], dest: Path) -> list[Path]:
    """Put the given files into dest, fetching only those missing or not matching their hash.

    Args:
        assets: the files wanted (`MODELS.values()`, `FOOTAGE.values()`).
        dest: the destination folder, created if needed.

    Returns:
        The files written (empty when everything was already in place).

    Raises:
        FetchError: a registry could not be reached, an archive lacks a file, or a file's hash is
            not the pinned one. Files already in place are left untouched.
    """
    dest.mkdir(parents=True, exist_ok=True)
    wanted = [asset for asset in assets if not _is_valid(dest / asset.name, asset.sha256)]
    by_source: dict[Source, list[Asset]] = {}
    for asset in wanted:
        by_source.setdefault(asset.source, []).append(asset)
    written: list[Path] = []
    for source, group in by_source.items():
        # The archive goes to a scratch folder inside dest (same filesystem) and is deleted after.
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dest) as scratch:
            if source.kind == "wheel":
                archive = _download_wheel(source, Path(scratch))
            else:
                archive = _download_tarball(source, Path(scratch))
            written += _extract(archive, source, group, dest)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.models fetch [--footage] [--dest DIR]`` / ``check``."""
    parser = argparse.ArgumentParser(prog="python -m analysis.models", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = commands.add_parser("fetch", help="fetch missing or corrupt files (idempotent)")
    fetch_cmd.add_argument(
        "--footage", action="store_true", help="the test footage instead of the models"
    )
    fetch_cmd.add_argument("--dest", type=Path, help="destination folder")
    commands.add_parser("check", help="verify the model files; exit 1 when one is bad")
    args = parser.parse_args(argv)

    if args.command == "check":
        try:
            for name in MODELS:
                verified_path(name)
        except ModelFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"pose models OK in {models_dir()}")
        return 0

    assets, dest = (FOOTAGE, footage_dir()) if args.footage else (MODELS, models_dir())
    dest = args.dest or dest
    try:
        written = fetch(assets.values(), dest)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"fetched {path}")
    print(f"{len(assets)} file(s) verified in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
