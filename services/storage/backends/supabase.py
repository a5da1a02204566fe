"""Supabase Storage through the real `supabase` async client, server side with the
service-role key (no session persistence, no token refresh).

Supabase Storage answers HTTP 400 for most errors with the real code in the body
(`statusCode` "409", "413", ...), which the client raises as StorageApiError; timeouts and
refused connections come as raw httpx exceptions. Both are classified here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar, cast

import httpx
from storage3.exceptions import StorageApiError
from storage3.utils import StorageException
from supabase import AClient

from services.common.errors import InvalidArgument, PermissionDenied, TooLarge
from services.common.objects import PUBLIC_PREFIX
from services.common.supabase import ServerSupabase
from services.storage.backends.base import BucketMissing, BucketSpec, PermanentStorageError, TransientStorageError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Upper bound of one HTTP call; each attempt is cut shorter by its own budget.
CLIENT_TIMEOUT = 30


def error_status(exc: StorageApiError) -> int:
    try:
        return int(exc.status)
    except (TypeError, ValueError):
        return 500


def classify(exc: BaseException, what: str) -> Exception:
    """StorageApiError / httpx errors -> transient (retry) or permanent (fail now)."""
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return TransientStorageError(f"{what}: Supabase did not answer in time")
    if isinstance(exc, httpx.TransportError):
        return TransientStorageError(f"{what}: connection to Supabase failed ({type(exc).__name__})")
    if isinstance(exc, StorageApiError):
        status, code = error_status(exc), str(exc.code or "")
        label = f"{what}: Supabase Storage {status} {code}".strip()
        if status >= 500 or status == 429 or code == "InternalError":
            return TransientStorageError(label)
        if status == 413:
            return PermanentStorageError(TooLarge(f"{label}: the object is larger than the bucket allows"))
        if status in (401, 403) or code == "Unauthorized":
            return PermanentStorageError(
                PermissionDenied(f"{label}: the service-role key was rejected; check SUPABASE_SERVICE_ROLE_KEY")
            )
        if status == 404 and "bucket" in (code + str(exc.message)).lower():
            return BucketMissing(label)
        return PermanentStorageError(InvalidArgument(f"{label}: {exc.message}"))
    if isinstance(exc, StorageException):
        return TransientStorageError(f"{what}: {type(exc).__name__}")
    return TransientStorageError(f"{what}: {type(exc).__name__}")


class SupabaseBackend:
    name = "supabase"

    def __init__(self, url: str, service_role_key: str) -> None:
        self.supabase = ServerSupabase(url, service_role_key, CLIENT_TIMEOUT)
        self.url = self.supabase.url

    async def client(self) -> AClient:
        return await self.supabase.client()

    async def _call(self, what: str, timeout: float, work: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(timeout):
                return await work
        except (TransientStorageError, PermanentStorageError):
            raise
        except Exception as exc:
            raise classify(exc, what) from exc

    async def bucket_exists(self, spec: BucketSpec, timeout: float) -> bool:
        client = await self.client()
        try:
            bucket = await self._call("get bucket", timeout, client.storage.get_bucket(spec.name))
        except PermanentStorageError as exc:
            if "404" in str(exc) or "not found" in str(exc).lower():
                return False
            raise
        except BucketMissing:
            return False
        self._report_differences(spec, bucket)
        return True

    @staticmethod
    def _report_differences(spec: BucketSpec, bucket: Any) -> None:
        found = {
            "public": getattr(bucket, "public", None),
            "file_size_limit": getattr(bucket, "file_size_limit", None),
            "allowed_mime_types": sorted(getattr(bucket, "allowed_mime_types", None) or []),
        }
        wanted = {
            "public": spec.public,
            "file_size_limit": spec.file_size_limit,
            "allowed_mime_types": sorted(spec.allowed_mime_types),
        }
        differs = {k: found[k] for k in wanted if found[k] != wanted[k]}
        if differs:
            log.warning(
                "bucket exists with other settings; uploads go on, but check it",
                extra={"bucket": spec.name, "found": differs, "wanted": {k: wanted[k] for k in differs}},
            )

    async def create_bucket(self, spec: BucketSpec, timeout: float) -> bool:
        client = await self.client()
        options: Any = {
            "public": spec.public,
            "file_size_limit": spec.file_size_limit,
            "allowed_mime_types": list(spec.allowed_mime_types),
        }
        try:
            await self._call("create bucket", timeout, client.storage.create_bucket(spec.name, spec.name, options))
        except PermanentStorageError as exc:
            if "409" in str(exc) or "Duplicate" in str(exc):
                return False  # a racing creator won: the bucket exists, which is all we need
            raise
        return True

    async def put(self, bucket: str, path: str, data: bytes, content_type: str, timeout: float) -> None:
        client = await self.client()
        options: Any = {"content-type": content_type, "upsert": "true", "cache-control": "3600"}
        await self._call("upload", timeout, client.storage.from_(bucket).upload(path, data, options))

    async def stage(self, bucket: str, path: str, content_type: str, size: int) -> StreamedUpload:
        """An upload that starts while the image still arrives: the Storage API's binary
        upload (the body typed by its Content-Type, as the JS client sends an ArrayBuffer),
        through the `supabase` client's own HTTP session."""
        http, headers = await self.supabase.session()
        return StreamedUpload(http, headers, f"{self.url}/storage/v1/object/{bucket}/{path}", content_type, size)

    def public_url(self, bucket: str, path: str) -> str:
        # The client computes the same URL locally; no request is needed.
        return f"{self.url}{PUBLIC_PREFIX}/{bucket}/{path}"

    async def close(self) -> None:
        await self.supabase.close()


class StreamedUpload:
    """One binary upload whose body is fed as the image arrives. The last chunk is held
    back until commit(), which comes only after the whole image has passed every check: a
    refused image ends the request before its declared length is reached, and Storage
    stores nothing from a body cut short (tests/storage/test_upload_stream.py)."""

    def __init__(self, http: httpx.AsyncClient, auth: dict[str, str], url: str, content_type: str, size: int) -> None:
        self._chunks: asyncio.Queue[bytes | memoryview | None] = asyncio.Queue()
        self._held: bytes | memoryview | None = None
        headers = {
            **auth,
            "Content-Type": content_type,
            "Content-Length": str(size),  # not chunked: the server knows the length up front
            "x-upsert": "true",
            "cache-control": "max-age=3600",
        }
        self._request = asyncio.create_task(http.post(url, content=self._body(), headers=headers))

    async def _body(self) -> AsyncIterator[bytes]:
        while (chunk := await self._chunks.get()) is not None:
            # A view of the gRPC message's bytes: httpx, h11 and the socket take any buffer
            # (httpx types its stream as bytes only), so the chunk is not copied again.
            yield cast(bytes, chunk)

    def feed(self, chunk: bytes | memoryview) -> None:
        if self._held is not None:
            self._chunks.put_nowait(self._held)
        self._held = chunk

    async def commit(self, timeout: float) -> None:
        if self._held is not None:
            self._chunks.put_nowait(self._held)
            self._held = None
        self._chunks.put_nowait(None)
        try:
            async with asyncio.timeout(timeout):
                response = await self._request
        except Exception as exc:
            raise classify(exc, "upload") from exc
        if response.status_code >= 400:
            raise classify(storage_error(response), "upload")

    async def discard(self) -> None:
        self._request.cancel()
        with contextlib.suppress(BaseException):
            await self._request


def storage_error(response: httpx.Response) -> StorageApiError:
    """The error storage3 would raise for this answer (it reads the same body)."""
    try:
        body = response.json()
        return StorageApiError(body["message"], body["error"], body["statusCode"])
    except (KeyError, TypeError, ValueError):
        return StorageApiError(f"unparsable error: {response.text[:200]}", "InternalError", response.status_code)
