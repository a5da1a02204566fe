"""The embedded default: objects as files under one root, written atomically.

Public URLs use Supabase's layout (/storage/v1/object/public/{bucket}/{path}); the gateway
serves them from the same directory.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.common.errors import Unavailable
from services.common.objects import PUBLIC_PREFIX, resolve_inside, write_atomically
from services.storage.backends.base import BucketSpec, PermanentStorageError, TransientStorageError


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
