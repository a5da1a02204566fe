"""The shared runtime: reflection and health on every server, deadlines honoured,
graceful shutdown."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from services.common.config import MIB
from services.common.server import Registration
from services.imagegen.call import ChainPolicy
from services.imagegen.chain import ProviderChain
from services.imagegen.providers.placeholder import PlaceholderProvider
from services.imagegen.servicer import SERVICE as IMAGEGEN
from services.imagegen.servicer import ImageGenServicer
from services.status.book import StatusBook
from services.status.servicer import SERVICE as STATUS
from services.status.servicer import StatusServicer
from services.status.stores.sqlite import SQLiteStore
from services.storage.backends.local import LocalBackend
from services.storage.servicer import SERVICE as STORAGE
from services.storage.servicer import StorageServicer
from services.storage.uploader import Uploader
from storyshort.imagegen.v1 import imagegen_pb2_grpc
from storyshort.status.v1 import status_pb2_grpc
from storyshort.storage.v1 import storage_pb2, storage_pb2_grpc
from tests.conftest import OWN_SUBCHANNELS, grpc_server
from tests.fakes.images import noisy_png


def registrations(tmp_path: Path) -> list[Registration]:
    chain = ProviderChain([], PlaceholderProvider(), ChainPolicy())
    return [
        Registration(imagegen_pb2_grpc.add_ImageGenServiceServicer_to_server, ImageGenServicer(chain, 60), IMAGEGEN),
        Registration(
            storage_pb2_grpc.add_StorageServiceServicer_to_server,
            StorageServicer(Uploader(LocalBackend(tmp_path / "s", "http://x"), "renders-images")),
            STORAGE,
        ),
        Registration(
            status_pb2_grpc.add_StatusServiceServicer_to_server,
            StatusServicer(StatusBook(SQLiteStore(tmp_path / "s.db"))),
            STATUS,
        ),
    ]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["imagegen", "storage", "status"])
async def test_reflection_lists_the_service_and_health_answers_serving(tmp_path: Path, index: int) -> None:
    reg = registrations(tmp_path)[index]
    async with grpc_server(reg) as (running, channel):

        def listed() -> list[str]:
            with grpc.insecure_channel(f"127.0.0.1:{running.port}", options=OWN_SUBCHANNELS) as sync_channel:
                return sorted(ProtoReflectionDescriptorDatabase(sync_channel).get_services())

        services = await asyncio.to_thread(listed)
        assert reg.full_name in services
        assert "grpc.health.v1.Health" in services
        assert "grpc.reflection.v1alpha.ServerReflection" in services
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", reg.full_name):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


class HangingBackend(LocalBackend):
    """A local backend whose writes never finish; records that the server gave up on them."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "http://x")
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def put(self, bucket: str, path: str, data: bytes, content_type: str, timeout: float) -> None:
        self.started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def test_call_past_its_deadline_answers_deadline_exceeded_promptly(tmp_path: Path) -> None:
    backend = HangingBackend(tmp_path)
    servicer = StorageServicer(Uploader(backend, "renders-images"))
    reg = Registration(storage_pb2_grpc.add_StorageServiceServicer_to_server, servicer, STORAGE)
    async with grpc_server(reg) as (_running, channel):
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Upload(
                storage_pb2.UploadRequest(
                    path="videos/v/images/scene-1.png", data=noisy_png(2000), content_type="image/png"
                ),
                timeout=0.5,
            )
        elapsed = time.monotonic() - started
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert elapsed < 0.5 + 1.5, f"answered after {elapsed:.2f} s"
        assert backend.started.is_set()
        # The server stopped working on the call: the hanging write was cancelled.
        await asyncio.wait_for(backend.cancelled.wait(), timeout=5)


async def test_five_mib_image_fits_through_grpc_message_limits(tmp_path: Path) -> None:
    reg = registrations(tmp_path)[1]
    data = noisy_png(int(4.8 * MIB))
    assert 4 * MIB < len(data) <= 5 * MIB
    async with grpc_server(reg) as (_running, channel):
        answer = await storage_pb2_grpc.StorageServiceStub(channel).Upload(
            storage_pb2.UploadRequest(path="videos/v/images/scene-1.png", data=data, content_type="image/png"),
            timeout=20,
        )
    assert answer.size == len(data)
    assert (tmp_path / "s" / "renders-images" / "videos/v/images/scene-1.png").read_bytes() == data


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_images_are_refused_in_every_format(fmt: str) -> None:
    from services.common.images import InvalidImage, inspect_image
    from tests.fakes.images import image_bytes

    good = image_bytes(fmt, (256, 256), (10, 200, 30))
    assert inspect_image(good).width == 256
    with pytest.raises(InvalidImage):
        inspect_image(good[: len(good) * 2 // 3])


def test_a_png_with_a_corrupted_chunk_is_refused() -> None:
    from services.common.images import InvalidImage, inspect_image

    good = noisy_png(50_000)
    middle = len(good) // 2
    with pytest.raises(InvalidImage):
        inspect_image(good[:middle] + bytes([good[middle] ^ 0xFF]) + good[middle + 1 :])
