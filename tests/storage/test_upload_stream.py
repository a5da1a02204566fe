"""UploadStream: the image in chunks, checked and hashed as it arrives, over a real gRPC
server with the local backend (real files) and with the `supabase` client against the fake.
Every refusal leaves the stored object as it was."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from gateway.clients import upload_chunks
from services.common.config import MIB
from services.common.deadlines import Deadline
from services.common.errors import InvalidArgument
from services.common.images import InvalidImage, inspect_image
from services.common.server import Registration
from services.common.wire import upload_stream_method
from services.storage.backends.local import LocalBackend
from services.storage.incoming import PngWalker
from services.storage.servicer import SERVICE, StorageServicer
from services.storage.uploader import DRAIN_SECONDS, Uploader
from storyshort.storage.v1 import storage_pb2, storage_pb2_grpc
from tests.conftest import grpc_server
from tests.fakes import supabase_fake as sf
from tests.fakes.images import image_bytes, noisy_png
from tests.storage.conftest import BUCKET

PATH = "videos/v1/images/scene-1.png"
BIG = noisy_png(int(4.8 * MIB))


def header(size: int, path: str = PATH, content_type: str = "image/png") -> storage_pb2.UploadStreamRequest:
    return storage_pb2.UploadStreamRequest(
        header=storage_pb2.UploadHeader(path=path, content_type=content_type, size=size)
    )


def chunks(data: bytes, every: int, size: int | None = None, **kw: str) -> list[storage_pb2.UploadStreamRequest]:
    body = [storage_pb2.UploadStreamRequest(data=data[i : i + every]) for i in range(0, len(data), every)]
    return [header(len(data) if size is None else size, **kw), *body]


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[storage_pb2_grpc.StorageServiceStub]:
    uploader = Uploader(LocalBackend(tmp_path, "http://gw"), BUCKET)
    reg = Registration(storage_pb2_grpc.add_StorageServiceServicer_to_server, StorageServicer(uploader), SERVICE)
    async with grpc_server(reg) as (_running, channel):
        yield storage_pb2_grpc.StorageServiceStub(channel)


def stored(tmp_path: Path, path: str = PATH) -> bytes | None:
    target = tmp_path / BUCKET / path
    return target.read_bytes() if target.exists() else None


async def refused(
    stub: storage_pb2_grpc.StorageServiceStub, messages: list[storage_pb2.UploadStreamRequest]
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UploadStream(iter(messages), timeout=10)
    return caught.value


@pytest.mark.parametrize("every", [512 * 1024, 7777], ids=["512KiB", "7777B"])
async def test_a_streamed_image_is_stored_whole_with_the_same_answer_as_upload(
    local: storage_pb2_grpc.StorageServiceStub, tmp_path: Path, every: int
) -> None:
    """Odd chunk sizes split the PNG's chunk headers and CRCs across messages."""
    answer = await local.UploadStream(iter(chunks(BIG, every)), timeout=20)
    assert stored(tmp_path) == BIG
    assert answer.sha256 == hashlib.sha256(BIG).hexdigest()
    assert answer.size == len(BIG) and answer.content_type == "image/png" and answer.attempts == 1
    unary = await local.Upload(storage_pb2.UploadRequest(path=PATH, data=BIG, content_type="image/png"), timeout=20)
    assert (unary.sha256, unary.public_url, unary.size) == (answer.sha256, answer.public_url, answer.size)


async def test_the_gateway_chunks_are_what_upload_stream_takes(tmp_path: Path) -> None:
    """The gateway's own call (raw chunks, encoded by hand) against the server's decoder."""
    parts = list(upload_chunks(PATH, BIG, "image/png"))
    assert isinstance(parts[0], storage_pb2.UploadStreamRequest) and len(parts) > 2
    assert all(isinstance(p, memoryview) for p in parts[1:])
    uploader = Uploader(LocalBackend(tmp_path, "http://gw"), BUCKET)
    reg = Registration(storage_pb2_grpc.add_StorageServiceServicer_to_server, StorageServicer(uploader), SERVICE)
    async with grpc_server(reg) as (_running, channel):
        answer = await upload_stream_method(channel)(iter(parts), timeout=20)
    assert answer.size == len(BIG) and stored(tmp_path) == BIG
    assert answer.sha256 == hashlib.sha256(BIG).hexdigest()


async def test_a_corrupted_byte_mid_stream_is_refused_and_the_old_image_stays(
    local: storage_pb2_grpc.StorageServiceStub, tmp_path: Path
) -> None:
    await local.UploadStream(iter(chunks(BIG, 512 * 1024)), timeout=20)
    middle = len(BIG) // 2
    bad = BIG[:middle] + bytes([BIG[middle] ^ 0x01]) + BIG[middle + 1 :]
    error = await refused(local, chunks(bad, 512 * 1024))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "CRC" in (error.details() or "")
    assert stored(tmp_path) == BIG
    assert [p.name for p in (tmp_path / BUCKET / "videos/v1/images").iterdir()] == ["scene-1.png"]


async def test_a_truncated_png_is_refused_even_when_its_size_is_announced_right(
    local: storage_pb2_grpc.StorageServiceStub, tmp_path: Path
) -> None:
    cut = BIG[: len(BIG) * 2 // 3]
    error = await refused(local, chunks(cut, 512 * 1024))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "truncated" in (error.details() or "")
    assert stored(tmp_path) is None


async def test_fewer_or_more_bytes_than_announced_are_refused(
    local: storage_pb2_grpc.StorageServiceStub, tmp_path: Path
) -> None:
    short = await refused(local, chunks(BIG, 512 * 1024, size=len(BIG) + 10))
    assert short.code() == grpc.StatusCode.INVALID_ARGUMENT and "ended after" in (short.details() or "")
    long = await refused(local, chunks(BIG, 512 * 1024, size=len(BIG) - 10))
    assert long.code() == grpc.StatusCode.INVALID_ARGUMENT and "more bytes than announced" in (long.details() or "")
    assert stored(tmp_path) is None


async def test_an_announced_size_over_the_limit_is_refused_before_any_byte(
    local: storage_pb2_grpc.StorageServiceStub,
) -> None:
    error = await refused(local, [header(6 * MIB)])
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "5 MiB" in (error.details() or "")


@pytest.mark.parametrize(
    ("messages", "says"),
    [
        ([], "first message must be the header"),
        ([storage_pb2.UploadStreamRequest(data=b"\x89PNG")], "first message must be the header"),
        ([header(10), header(10)], "only the first message is a header"),
        ([header(10, path="../x.png")], "path"),
        ([header(10, content_type="text/html")], "content type"),
        ([header(0)], "empty"),
    ],
    ids=["nothing", "data-first", "two-headers", "escaping-path", "not-an-image-type", "empty"],
)
async def test_malformed_streams_get_a_message_a_person_can_act_on(
    local: storage_pb2_grpc.StorageServiceStub, messages: list[storage_pb2.UploadStreamRequest], says: str
) -> None:
    error = await refused(local, messages)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in (error.details() or "")


async def test_a_jpeg_labelled_png_is_named_as_what_it_is_and_a_jpeg_stream_is_stored(
    local: storage_pb2_grpc.StorageServiceStub, tmp_path: Path
) -> None:
    jpeg = image_bytes("JPEG", (512, 512))
    error = await refused(local, chunks(jpeg, 4096))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "which are image/jpeg" in (error.details() or "")
    path = "videos/v1/images/scene-2.jpg"
    answer = await local.UploadStream(iter(chunks(jpeg, 4096, path=path, content_type="image/jpeg")), timeout=10)
    assert answer.content_type == "image/jpeg" and stored(tmp_path, path) == jpeg
    broken = jpeg[: len(jpeg) // 2]
    error = await refused(local, chunks(broken, 4096, path=path, content_type="image/jpeg"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and stored(tmp_path, path) == jpeg


async def test_a_stream_that_stalls_ends_at_its_deadline_and_stores_nothing(
    local: storage_pb2_grpc.StorageServiceStub, tmp_path: Path
) -> None:
    gate = asyncio.Event()

    async def stalling() -> AsyncIterator[storage_pb2.UploadStreamRequest]:
        yield header(len(BIG))
        yield storage_pb2.UploadStreamRequest(data=BIG[:1000])
        await gate.wait()  # never set: the rest never comes

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await local.UploadStream(stalling(), timeout=1.0)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert stored(tmp_path) is None


@pytest.mark.parametrize("stalls", [False, True], ids=["sends-the-rest", "stalls"])
async def test_a_stream_refused_mid_way_is_read_to_its_end_before_the_refusal(tmp_path: Path, stalls: bool) -> None:
    """The rest of a refused image is taken unlooked at (grpcio's asyncio client reports
    INTERNAL, not the refusal, when the server ends a stream it still writes), and a caller
    that stalls after the bad bytes is refused after at most DRAIN_SECONDS all the same."""
    uploader = Uploader(LocalBackend(tmp_path, "http://gw"), BUCKET)
    await uploader.ensurer.ensure(Deadline.of(5))
    bad = BIG[:100_000] + bytes([BIG[100_000] ^ 0x01]) + BIG[100_001:]
    parts = [bad[i : i + 512 * 1024] for i in range(0, len(bad), 512 * 1024)]
    pulled: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for n, part in enumerate(parts):
            pulled.append(n)
            yield part
            if n == 0:  # the first part's check has run: the refusal is known from here on
                await asyncio.wrap_future(uploader._checker.submit(lambda: None))
            if stalls and n == 2:
                await asyncio.Event().wait()  # never set

    started = time.monotonic()
    with pytest.raises(InvalidArgument, match="CRC"):
        await uploader.receive("", PATH, "image/png", len(bad), chunks(), Deadline.of(30))
    assert pulled == ([0, 1, 2] if stalls else list(range(len(parts))))
    assert time.monotonic() - started < DRAIN_SECONDS + 10  # generous: refused, not held to the deadline
    assert stored(tmp_path) is None


def test_the_png_walk_finds_every_split_and_refuses_what_pillow_refuses() -> None:
    png = noisy_png(20_000)
    walker = PngWalker()
    for byte in png:  # one byte at a time: every boundary split
        walker.feed(bytes([byte]))
    assert walker.complete
    rng = random.Random(7)
    for position in rng.sample(range(8, len(png)), 40):
        bad = png[:position] + bytes([png[position] ^ 0x10]) + png[position + 1 :]
        with pytest.raises(InvalidImage):
            inspect_image(bad)
        with pytest.raises(InvalidImage):
            walk = PngWalker()
            walk.feed(bad)
            if not walk.complete:
                raise InvalidImage("incomplete")


@pytest.fixture
async def supabase_stub(
    storage: storage_pb2_grpc.StorageServiceStub,
) -> AsyncIterator[storage_pb2_grpc.StorageServiceStub]:
    """Storage on the Supabase fake, its bucket already known (so uploads stream on)."""
    await storage.EnsureBucket(storage_pb2.EnsureBucketRequest(), timeout=10)
    yield storage


async def test_the_first_image_before_the_bucket_is_known_goes_whole_and_a_broken_one_never_does(
    fake: sf.FakeSupabase, storage: storage_pb2_grpc.StorageServiceStub
) -> None:
    answer = await storage.UploadStream(iter(chunks(BIG, 512 * 1024)), timeout=20)
    assert fake.objects[(BUCKET, PATH)] == (BIG, "image/png")
    assert answer.public_url.startswith(f"{fake.url}/storage/v1/object/public/{BUCKET}/{PATH}?v=")
    uploads = fake.count("upload")
    bad = BIG[:100_000] + bytes([BIG[100_000] ^ 0x01]) + BIG[100_001:]
    error = await refused(storage, chunks(bad, 512 * 1024))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fake.count("upload") == uploads  # no upload was completed
    assert fake.objects[(BUCKET, PATH)] == (BIG, "image/png")


async def test_a_streamed_image_goes_to_supabase_while_it_arrives_as_a_binary_upload(
    fake: sf.FakeSupabase, supabase_stub: storage_pb2_grpc.StorageServiceStub
) -> None:
    answer = await supabase_stub.UploadStream(iter(chunks(BIG, 512 * 1024)), timeout=20)
    assert fake.objects[(BUCKET, PATH)] == (BIG, "image/png")
    assert answer.public_url.startswith(f"{fake.url}/storage/v1/object/public/{BUCKET}/{PATH}?v=")
    sent = [r for r in fake.requests if r.route == "upload"]
    assert len(sent) == 1 and answer.attempts == 1
    headers = sent[0].headers
    assert headers["content-type"] == "image/png" and headers["content-length"] == str(len(BIG))
    assert headers["x-upsert"] == "true" and headers["authorization"] == f"Bearer {fake.key}"


@pytest.mark.parametrize(
    "bad",
    [
        BIG[:100_000] + bytes([BIG[100_000] ^ 0x01]) + BIG[100_001:],  # caught mid-stream
        BIG[:-1] + bytes([BIG[-1] ^ 0x01]),  # caught only in the last chunk (IEND's CRC)
    ],
    ids=["early", "last-byte"],
)
async def test_a_broken_image_never_completes_its_upload_and_the_old_object_stays(
    fake: sf.FakeSupabase, supabase_stub: storage_pb2_grpc.StorageServiceStub, bad: bytes
) -> None:
    await supabase_stub.UploadStream(iter(chunks(BIG, 512 * 1024)), timeout=20)
    uploads = fake.count("upload")
    error = await refused(supabase_stub, chunks(bad, 512 * 1024))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fake.count("upload") == uploads  # no upload was completed
    assert fake.objects[(BUCKET, PATH)] == (BIG, "image/png")


async def test_a_streamed_attempt_that_fails_is_retried_with_the_whole_image(
    fake: sf.FakeSupabase, supabase_stub: storage_pb2_grpc.StorageServiceStub
) -> None:
    fake.inject("upload", sf.Fail(500), sf.Pass())
    answer = await supabase_stub.UploadStream(iter(chunks(BIG, 512 * 1024)), timeout=20)
    assert answer.attempts == 2
    sent = [r for r in fake.requests if r.route == "upload"]
    assert [r.headers["content-type"].split(";")[0] for r in sent] == ["image/png", "multipart/form-data"]
    assert fake.objects[(BUCKET, PATH)] == (BIG, "image/png")


async def test_a_streamed_upload_the_bucket_refuses_as_too_large_is_resource_exhausted(
    fake: sf.FakeSupabase, supabase_stub: storage_pb2_grpc.StorageServiceStub
) -> None:
    fake.buckets[BUCKET]["file_size_limit"] = 1024 * 1024
    error = await refused(supabase_stub, chunks(BIG, 512 * 1024))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (BUCKET, PATH) not in fake.objects
