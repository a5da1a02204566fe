"""The embedded default: objects as files under one root, written atomically.

Public URLs use Supabase's layout (/storage/v1/object/public/{bucket}/{path}); the gateway
serves them from the same directory.
"""

from __future__ import annotations

import asyncio
import errno
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

from services.common.errors import Unavailable
from services.common.objects import PUBLIC_PREFIX, AtomicFile, resolve_inside, write_atomically
from services.storage.backends.base import BucketSpec, PermanentStorageError, TransientStorageError


class LocalBackend:
    name = "local"

    def __init__(self, root: Path, public_base_url: str) -> None:
        self.root = root
        self.public_base_url = public_base_url.rstrip("/")
        # Staged writes run here, one at a time in the order given: a file's chunks stay in order.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="staged-write")
        # Replaced objects are freed here, after the upload has answered (AtomicFile.commit).
        self._freer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replaced-free")

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
                await asyncio.to_thread(write_atomically, target, data, self._freer.submit)
        except TimeoutError as exc:
            raise TransientStorageError("local write timed out") from exc
        except OSError as exc:
            raise classify(exc) from exc

    async def stage(self, bucket: str, path: str, content_type: str, size: int) -> StagedWrite:
        """A write that starts before the image is whole: its bytes go to a temp file as
        they arrive (in order, off the event loop) and replace the object only on commit."""
        return StagedWrite(resolve_inside(self.root, bucket, path), self._writer, self._freer, size)

    def public_url(self, bucket: str, path: str) -> str:
        return f"{self.public_base_url}{PUBLIC_PREFIX}/{bucket}/{path}"

    async def close(self) -> None:
        self._writer.shutdown(wait=False, cancel_futures=True)
        self._freer.shutdown(wait=True)  # quick: closes files


def classify(exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return PermanentStorageError(Unavailable("the storage disk is full; free space and retry the video"))
    return TransientStorageError(f"local write failed: {exc.strerror}")


class StagedWrite:
    """One object's bytes written as they come; see LocalBackend.stage."""

    def __init__(self, target: Path, writer: Executor, freer: Executor, size: int) -> None:
        self.writer = writer
        self.freer = freer
        self.target = target
        self.size = size
        self._written = 0
        self._file: AtomicFile | None = None
        self._error: OSError | None = None

    def _write(self, chunk: bytes | memoryview) -> None:
        if self._error is not None:
            return
        try:
            if self._file is None:
                self._file = AtomicFile(self.target)
            self._file.write_through(chunk)
            self._written += len(chunk)
            if self._written == self.size:
                # Durable while the last chunk is still being checked and hashed: the
                # commit then only renames (the fsync publishes nothing).
                self._file.sync()
        except OSError as exc:
            self._error = exc

    def feed(self, chunk: bytes | memoryview) -> None:
        self.writer.submit(self._write, chunk)

    def _commit(self) -> None:
        if self._error is not None:
            if self._file is not None:
                self._file.discard()
            raise self._error
        if self._file is None:
            raise OSError(errno.EIO, "nothing was written")
        self._file.commit()
        self.freer.submit(self._file.release)

    async def commit(self, timeout: float) -> None:
        """fsync and rename; raises what put raises, so the retry policy treats it the same."""
        try:
            async with asyncio.timeout(timeout):
                # After the writes queued before it (the last of which synced the file);
                # the rename off the writer thread.
                await asyncio.wrap_future(self.writer.submit(lambda: None))
                await asyncio.to_thread(self._commit)
        except TimeoutError as exc:
            raise TransientStorageError("local write timed out") from exc
        except OSError as exc:
            raise classify(exc) from exc

    async def discard(self) -> None:
        """Drop the temp file (after the writes already queued): the object stays as it was."""

        def drop() -> None:
            if self._file is not None:
                self._file.discard()

        await asyncio.wrap_future(self.writer.submit(drop))
