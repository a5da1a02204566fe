"""The embedded default: objects as files under one root, written atomically.

Public URLs use Supabase's layout (/storage/v1/object/public/{bucket}/{path}); the gateway
serves them from the same directory.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

from services.common.errors import InvalidArgument, Unavailable
from services.storage.backends.base import BucketSpec, PermanentStorageError, TransientStorageError

PUBLIC_PREFIX = "/storage/v1/object/public"


def resolve_inside(root: Path, bucket: str, path: str) -> Path:
    """root/bucket/path, refusing anything that would land outside root."""
    base = root.resolve()
    target = (base / bucket / path).resolve()
    if not target.is_relative_to(base / bucket):
        raise InvalidArgument("path escapes the bucket")
    return target


def write_atomically(target: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename, fsync the directory: a crash
    leaves the old object or the new one, never a torn one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class LocalBackend:
    name = "local"

    def __init__(self, root: Path, public_base_url: str) -> None:
        self.root = root
        self.public_base_url = public_base_url.rstrip("/")

    async def bucket_exists(self, spec: BucketSpec, timeout: float) -> bool:
        return (self.root / spec.name).is_dir()

    async def create_bucket(self, spec: BucketSpec, timeout: float) -> bool:
        try:
            (self.root / spec.name).mkdir(parents=True)
            return True
        except FileExistsError:
            return False

    async def put(self, bucket: str, path: str, data: bytes, content_type: str, timeout: float) -> None:
        target = resolve_inside(self.root, bucket, path)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.to_thread(write_atomically, target, data)
        except TimeoutError as exc:
            raise TransientStorageError("local write timed out") from exc
        except OSError as exc:
            if exc.errno in (28, 122):  # ENOSPC, EDQUOT
                raise PermanentStorageError(
                    Unavailable("the storage disk is full; free space and retry the video")
                ) from exc
            raise TransientStorageError(f"local write failed: {exc.strerror}") from exc

    def public_url(self, bucket: str, path: str) -> str:
        return f"{self.public_base_url}{PUBLIC_PREFIX}/{bucket}/{path}"

    async def close(self) -> None:
        return None
