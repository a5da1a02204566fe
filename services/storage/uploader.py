"""Upload logic: refuse bad input before any network call, ensure the bucket once,
retry only what can succeed, answer a versioned public URL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from services.common import objects
from services.common.config import MAX_IMAGE_BYTES
from services.common.deadlines import Deadline
from services.common.errors import DeadlineExceeded, InvalidArgument, TooLarge, Unavailable
from services.common.images import CONTENT_TYPES, INLINE_CHECK_BYTES
from services.common.retry import UPLOAD_BACKOFF, RetryPolicy, retrying
from services.storage import metrics
from services.storage.backends.base import (
    BucketMissing,
    BucketSpec,
    PermanentStorageError,
    Staged,
    StorageBackend,
    TransientStorageError,
)
from services.storage.incoming import Chunk, Incoming, Received

log = logging.getLogger(__name__)

IMAGE_MIME_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
UPLOAD_POLICY = RetryPolicy(attempts=3, backoff=UPLOAD_BACKOFF, min_attempt=0.2, retry_on=(TransientStorageError,))
# Longest one attempt may take (cut shorter by the caller's deadline).
ATTEMPT_TIMEOUT = 15.0
# Longest a refused stream's remaining bytes are waited for (see drain).
DRAIN_SECONDS = 1.0


@dataclass(frozen=True)
class UploadResult:
    bucket: str
    path: str
    public_url: str
    size: int
    content_type: str
    sha256: str
    attempts: int


async def drain(chunks: AsyncIterator[Chunk], incoming: Incoming) -> None:
    """Take, unlooked at, what the caller is still sending of a refused image (no more than
    it announced, for at most DRAIN_SECONDS), so the refusal reaches it as sent: grpcio's
    asyncio client reports INTERNAL instead of the server's status when the server ends a
    client stream while the client still writes (grpc/grpc#36066; seen in CI)."""
    with contextlib.suppress(TimeoutError, InvalidArgument):
        async with asyncio.timeout(DRAIN_SECONDS):
            async for chunk in chunks:
                incoming.take(len(chunk))  # more than announced: InvalidArgument, stop


class BucketEnsurer:
    """Creates the bucket at most once per process: concurrent first uploads share one
    check (single flight); once known to exist it is never checked again."""

    def __init__(self, backend: StorageBackend, spec: BucketSpec) -> None:
        self.backend = backend
        self.spec = spec
        self._known = False
        self._lock = asyncio.Lock()

    async def ensure(self, deadline: Deadline) -> bool:
        """True when this call created the bucket."""
        if self._known:
            return False
        async with self._lock:
            if self._known:
                return False
            created = False
            async for attempt in retrying(UPLOAD_POLICY, deadline):
                with attempt:
                    timeout = deadline.slice(ATTEMPT_TIMEOUT)
                    if not await self.backend.bucket_exists(self.spec, timeout):
                        created = await self.backend.create_bucket(self.spec, deadline.slice(ATTEMPT_TIMEOUT))
            self._known = True
            if created:
                metrics.BUCKETS_CREATED.inc()
                log.info("bucket created", extra={"bucket": self.spec.name, "backend": self.backend.name})
            return created

    @property
    def known(self) -> bool:
        """The bucket is known to exist (an upload has been stored, or it was ensured)."""
        return self._known

    def forget(self) -> None:
        """The bucket disappeared: check (and create) it again before the next upload."""
        self._known = False


class Uploader:
    def __init__(self, backend: StorageBackend, bucket: str, max_bytes: int = MAX_IMAGE_BYTES) -> None:
        self.backend = backend
        self.bucket = bucket
        self.max_bytes = max_bytes
        # Streamed images are checked in one thread and hashed in another (both let go of
        # the GIL for the bulk of it), one chunk at a time in arrival order.
        self._checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="image-check")
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="image-hash")
        self.ensurer = BucketEnsurer(
            backend, BucketSpec(bucket, public=True, file_size_limit=max_bytes, allowed_mime_types=IMAGE_MIME_TYPES)
        )

    def check_bucket(self, bucket: str) -> str:
        bucket = bucket or self.bucket
        objects.bucket_name(bucket)
        if bucket != self.bucket:
            raise InvalidArgument(f"unknown bucket {bucket!r}; this service stores into {self.bucket!r}")
        return bucket

    def begin(self, bucket: str, path: str, content_type: str, size: int) -> Incoming:
        """Check everything but the bytes themselves (before any of them is read), and
        answer where to feed them."""
        self.check_bucket(bucket)
        objects.object_path(path)
        if size > self.max_bytes:
            raise TooLarge(f"image is {size} bytes; the limit is {self.max_bytes} bytes (5 MiB)")
        if size <= 0:
            raise InvalidArgument("the image is empty; send its bytes")
        if content_type not in CONTENT_TYPES:
            raise InvalidArgument(f"content type {content_type!r} is not one of {', '.join(sorted(CONTENT_TYPES))}")
        objects.check_extension(path, content_type)
        return Incoming(content_type, size)

    async def upload(self, bucket: str, path: str, data: bytes, content_type: str, deadline: Deadline) -> UploadResult:
        """The whole image at once (the unary Upload)."""
        incoming = self.begin(bucket, path, content_type, len(data))
        if len(data) > INLINE_CHECK_BYTES:
            await asyncio.to_thread(incoming.add, data)  # milliseconds of hashing: off the event loop
        else:
            incoming.add(data)
        return await self.store(bucket, path, await incoming.finish(), deadline)

    async def receive(
        self, bucket: str, path: str, content_type: str, size: int, chunks: AsyncIterator[Chunk], deadline: Deadline
    ) -> UploadResult:
        """An image arriving in chunks (UploadStream): each checked and hashed as it comes
        and, where the backend can, written to a temp file at once; the object is replaced
        only once the whole image has passed every check."""
        incoming = self.begin(bucket, path, content_type, size)
        bucket = self.check_bucket(bucket)
        if size <= INLINE_CHECK_BYTES:  # small: nothing worth overlapping, no thread hops
            async for chunk in chunks:
                incoming.add(chunk)
            return await self.store(bucket, path, await incoming.finish(), deadline)
        staged = await self.backend.stage(bucket, path, content_type, size) if self.ensurer.known else None
        try:
            async for chunk in chunks:
                incoming.take(len(chunk))
                if incoming.error is not None:  # seen by the checker: refuse, unchecked the rest
                    await drain(chunks, incoming)
                    raise incoming.error
                # Checked and hashed in two threads, each in order, while this loop takes
                # the next chunk; the staged write has it at once (it commits only after
                # every check has passed, and a refused image never completes it).
                self._checker.submit(incoming.check, chunk)
                self._hasher.submit(incoming.hash, chunk)
                if staged is not None:
                    staged.feed(chunk)
            for thread in (self._checker, self._hasher):  # every chunk checked and hashed
                await asyncio.wrap_future(thread.submit(lambda: None))
            received = await incoming.finish()
        except BaseException:
            if staged is not None:  # also when the caller went away: nothing is stored
                await asyncio.shield(staged.discard())
            raise
        return await self.store(bucket, path, received, deadline, staged)

    async def store(
        self, bucket: str, path: str, received: Received, deadline: Deadline, staged: Staged | None = None
    ) -> UploadResult:
        """Put a received, checked image, retrying what can succeed inside the deadline. A
        staged write is committed by the first attempt; any later attempt writes whole."""
        bucket = self.check_bucket(bucket)
        content_type = received.info.content_type
        started = time.monotonic()
        attempts = 0
        try:
            try:
                async for attempt in retrying(UPLOAD_POLICY, deadline):
                    with attempt:
                        await self.ensurer.ensure(deadline)  # free once the bucket is known
                        attempts += 1
                        metrics.UPLOAD_ATTEMPTS.inc()
                        timeout = deadline.slice(ATTEMPT_TIMEOUT)
                        if timeout <= 0:
                            raise DeadlineExceeded("the deadline passed before the upload could start")
                        try:
                            if staged is not None:
                                committing, staged = staged, None
                                await committing.commit(timeout)
                            else:
                                await self.backend.put(bucket, path, received.data, content_type, timeout)
                        except BucketMissing:
                            self.ensurer.forget()
                            raise
                        except TransientStorageError as exc:
                            log.warning(
                                "upload attempt failed",
                                extra={"path": path, "attempt": attempts, "error": str(exc)},
                            )
                            raise
            except PermanentStorageError as exc:
                metrics.UPLOADS.labels("rejected").inc()
                raise exc.error from exc
            except TransientStorageError as exc:
                metrics.UPLOADS.labels("failed").inc()
                if deadline.remaining() <= UPLOAD_POLICY.min_attempt:
                    raise DeadlineExceeded(f"upload did not succeed before the deadline: {exc}") from exc
                raise Unavailable(f"upload failed after {attempts} attempts: {exc}") from exc
        finally:
            if staged is not None:  # never committed (the bucket could not be ensured)
                await asyncio.shield(staged.discard())
        metrics.UPLOADS.labels("stored").inc()
        metrics.UPLOAD_BYTES.inc(received.size)
        metrics.UPLOAD_SECONDS.observe(time.monotonic() - started)
        digest = received.sha256
        return UploadResult(
            bucket=bucket,
            path=path,
            public_url=self.versioned_url(bucket, path, digest),
            size=received.size,
            content_type=content_type,
            sha256=digest,
            attempts=attempts,
        )

    def versioned_url(self, bucket: str, path: str, digest: str) -> str:
        # The version makes a re-uploaded scene a new URL, so no cache serves it stale.
        return f"{self.backend.public_url(bucket, path)}?v={digest[:16]}"
