"""The storage service over gRPC, with the real `supabase` client talking to a fake
Supabase Storage server. Proofs come from the fake's request counts and timestamps."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from storyshort.storage.v1 import storage_pb2, storage_pb2_grpc
from tests.fakes import supabase_fake as sf
from tests.fakes.images import image_bytes
from tests.storage.conftest import BUCKET, serve

PNG = image_bytes("PNG")


def upload(
    scene: int = 1, data: bytes = PNG, content_type: str = "image/png", path: str | None = None
) -> storage_pb2.UploadRequest:
    return storage_pb2.UploadRequest(
        path=path or f"videos/v1/images/scene-{scene}.png", data=data, content_type=content_type
    )


async def test_upload_stores_the_bytes_with_their_type_and_a_versioned_public_url(
    fake: sf.FakeSupabase, storage: storage_pb2_grpc.StorageServiceStub
) -> None:
    answer = await storage.Upload(upload(), timeout=10)
    assert answer.attempts == 1 and answer.content_type == "image/png" and answer.size == len(PNG)
    assert answer.public_url.startswith(f"{fake.url}/storage/v1/object/public/{BUCKET}/videos/v1/images/scene-1.png?v=")
    assert fake.objects[(BUCKET, "videos/v1/images/scene-1.png")] == (PNG, "image/png")
    bucket = fake.buckets[BUCKET]
    assert bucket["public"] is True and bucket["file_size_limit"] == 5 * 1024 * 1024
    assert "image/png" in bucket["allowed_mime_types"]
    upload_request = next(r for r in fake.requests if r.route == "upload")
    assert upload_request.headers["x-upsert"] == "true"
    # Re-uploading other bytes gives a new URL (no stale cache).
    again = await storage.Upload(upload(data=image_bytes("PNG", color=(1, 2, 3))), timeout=10)
    assert again.public_url != answer.public_url


async def test_bucket_is_created_once_under_twenty_concurrent_first_uploads(
    fake: sf.FakeSupabase, storage: storage_pb2_grpc.StorageServiceStub
) -> None:
    answers = await asyncio.gather(*(storage.Upload(upload(n), timeout=20) for n in range(1, 21)))
    assert all(a.attempts == 1 for a in answers)
    assert fake.count("create_bucket") == 1
    assert fake.count("get_bucket") == 1
    assert fake.count("upload") == 20


async def test_no_bucket_check_per_upload_once_the_bucket_is_known(
    fake: sf.FakeSupabase, storage: storage_pb2_grpc.StorageServiceStub
) -> None:
    for n in range(1, 6):
        await storage.Upload(upload(n), timeout=10)
    assert fake.count("list_buckets") == 0
    assert fake.count("get_bucket") == 1
    assert fake.count("create_bucket") == 1


async def test_bucket_created_by_someone_else_between_check_and_create_is_success(
    fake: sf.FakeSupabase, storage: storage_pb2_grpc.StorageServiceStub
) -> None:
    fake.race_bucket_on_create = True
    answer = await storage.Upload(upload(), timeout=10)
    assert answer.attempts == 1
    assert fake.count("create_bucket") == 1


async def test_existing_bucket_with_other_settings_is_reported(
    fake: sf.FakeSupabase, storage: storage_pb2_grpc.StorageServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    fake.buckets[BUCKET] = {
        "id": BUCKET,
        "name": BUCKET,
        "owner": "",
        "public": False,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "file_size_limit": None,
        "allowed_mime_types": None,
    }
    await storage.Upload(upload(), timeout=10)
    assert fake.count("create_bucket") == 0
    warning = next(r for r in caplog.records if "other settings" in r.getMessage())
    assert warning.__dict__["found"]["public"] is False


async def test_two_server_errors_then_success_takes_three_attempts_with_backoff(
    fake: sf.FakeSupabase, storage: storage_pb2_grpc.StorageServiceStub
) -> None:
    fake.inject("upload", sf.Fail(500), sf.Fail(500), sf.Pass())
    answer = await storage.Upload(upload(), timeout=10)
    assert answer.attempts == 3
    t = fake.times("upload")
    assert len(t) == 3
    assert t[1] - t[0] >= 0.5 and t[2] - t[1] >= 1.0


async def test_persistent_server_errors_stop_after_three_attempts_with_no_sleep_after_the_last(
    fake: sf.FakeSupabase, storage: storage_pb2_grpc.StorageServiceStub
) -> None:
    fake.inject("upload", sf.UNAVAILABLE)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await storage.Upload(upload(), timeout=10)
    answered = time.monotonic()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "after 3 attempts" in (err.value.details() or "")
    t = fake.times("upload")
    assert len(t) == 3
    # A backoff after the last attempt would add 1 s or more (UPLOAD_BACKOFF); none follows it.
    assert answered - t[-1] < 1.0, "slept after the last attempt"


@pytest.mark.parametrize(
    ("fault", "code"),
    [(sf.TOO_LARGE, grpc.StatusCode.RESOURCE_EXHAUSTED), (sf.BAD_KEY, grpc.StatusCode.PERMISSION_DENIED)],
    ids=["413", "403"],
)
async def test_errors_that_cannot_succeed_fail_after_one_attempt(
    fake: sf.FakeSupabase, storage: storage_pb2_grpc.StorageServiceStub, fault: sf.Fail, code: grpc.StatusCode
) -> None:
    fake.inject("upload", fault)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await storage.Upload(upload(), timeout=10)
    assert err.value.code() == code
    assert fake.count("upload") == 1
    assert fake.key not in (err.value.details() or "")


async def test_a_wrong_service_role_key_fails_at_once_with_a_clear_message(fake: sf.FakeSupabase) -> None:
    async for storage in serve(fake, "wrong-key-0000000000"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await storage.Upload(upload(), timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "SUPABASE_SERVICE_ROLE_KEY" in (err.value.details() or "")
        assert fake.count("get_bucket") == 1 and fake.count("upload") == 0


async def test_the_deadline_cuts_retries_short(
    fake: sf.FakeSupabase, storage: storage_pb2_grpc.StorageServiceStub
) -> None:
    await storage.EnsureBucket(storage_pb2.EnsureBucketRequest(), timeout=5)
    fake.inject("upload", sf.UNAVAILABLE)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await storage.Upload(upload(), timeout=1.5)
    assert err.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    assert time.monotonic() - started < 1.5 + 1.0
    # 1.5 s fits the first attempt, the 0.5 s backoff and a second attempt (0.2 s at least),
    # never the 1 s backoff and a third: the second is sent unless the first took 0.8 s.
    assert fake.count("upload") == 2


async def test_a_hanging_upload_is_cut_at_the_deadline(
    fake: sf.FakeSupabase, storage: storage_pb2_grpc.StorageServiceStub
) -> None:
    fake.inject("upload", sf.Hang())
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await storage.Upload(upload(), timeout=1.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.5 + 1.0
    assert fake.count("upload") == 1


@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        (upload(path="/etc/passwd.png"), grpc.StatusCode.INVALID_ARGUMENT, "relative"),
        (upload(path="videos/../../x.png"), grpc.StatusCode.INVALID_ARGUMENT, "'..'"),
        (upload(path="videos/a b/x.png"), grpc.StatusCode.INVALID_ARGUMENT, "may contain only"),
        (upload(path="videos/x.jpg"), grpc.StatusCode.INVALID_ARGUMENT, "does not match"),
        (upload(content_type="image/jpeg", path="videos/x.jpg"), grpc.StatusCode.INVALID_ARGUMENT, "are image/png"),
        (upload(data=b"not an image"), grpc.StatusCode.INVALID_ARGUMENT, "not an image"),
        (upload(content_type="text/plain"), grpc.StatusCode.INVALID_ARGUMENT, "content type"),
        (upload(data=b"\x89PNG" + b"0" * (5 * 1024 * 1024)), grpc.StatusCode.RESOURCE_EXHAUSTED, "5 MiB"),
        (
            storage_pb2.UploadRequest(bucket="other", path="a.png", data=PNG, content_type="image/png"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown bucket",
        ),
        (
            storage_pb2.UploadRequest(bucket="../x", path="a.png", data=PNG, content_type="image/png"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not a valid name",
        ),
    ],
    ids=[
        "absolute",
        "dotdot",
        "odd-chars",
        "ext-mismatch",
        "type-mismatch",
        "not-image",
        "not-image-type",
        "too-large",
        "unknown-bucket",
        "bad-bucket",
    ],
)
async def test_bad_input_is_refused_before_any_network_call(
    fake: sf.FakeSupabase,
    storage: storage_pb2_grpc.StorageServiceStub,
    request_: storage_pb2.UploadRequest,
    code: grpc.StatusCode,
    words: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await storage.Upload(request_, timeout=10)
    assert err.value.code() == code
    assert words in (err.value.details() or "")
    assert fake.requests == []


async def test_a_bucket_deleted_after_it_was_known_is_created_again(
    fake: sf.FakeSupabase, storage: storage_pb2_grpc.StorageServiceStub
) -> None:
    await storage.Upload(upload(1), timeout=10)
    assert fake.count("create_bucket") == 1
    with fake.lock:  # someone deletes the bucket behind our back
        fake.buckets.pop(BUCKET)
    answer = await storage.Upload(upload(2), timeout=10)
    assert answer.attempts == 2  # the first put met "Bucket not found"; the bucket was made again
    assert fake.count("create_bucket") == 2 and BUCKET in fake.buckets
    assert (BUCKET, "videos/v1/images/scene-2.png") in fake.objects
