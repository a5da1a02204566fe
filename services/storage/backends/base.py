"""What a storage backend does, and the two kinds of failure the upload policy knows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.common.errors import ServiceError


class TransientStorageError(Exception):
    """Worth another attempt: 5xx, 429, timeouts, connection errors."""


class BucketMissing(TransientStorageError):
    """The bucket vanished after it was ensured: ensure it again, then retry."""


class PermanentStorageError(Exception):
    """Retrying will not help (too large, bad key, bad path): carries the gRPC-facing error."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class BucketSpec:
    name: str
    public: bool
    file_size_limit: int
    allowed_mime_types: tuple[str, ...]


class Staged(Protocol):
    """An object written while its bytes still arrive, replaced only on commit."""

    def feed(self, chunk: bytes | memoryview) -> None: ...

    async def commit(self, timeout: float) -> None:
        """Raises what put raises for the same failures."""
        ...

    async def discard(self) -> None: ...


class StorageBackend(Protocol):
    name: str

    async def bucket_exists(self, spec: BucketSpec, timeout: float) -> bool:
        """True when the bucket exists (and reports settings that differ from spec)."""
        ...

    async def create_bucket(self, spec: BucketSpec, timeout: float) -> bool:
        """Create it; False when someone else created it first (not an error)."""
        ...

    async def put(self, bucket: str, path: str, data: bytes, content_type: str, timeout: float) -> None: ...

    async def stage(self, bucket: str, path: str, content_type: str, size: int) -> Staged:
        """A write that starts before the image is whole, fed chunks as they arrive: until
        commit(), which comes only once the whole image has passed every check, nothing of
        it replaces the object."""
        ...

    def public_url(self, bucket: str, path: str) -> str: ...

    async def close(self) -> None: ...
