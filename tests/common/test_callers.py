"""With GRPC_SERVICE_TOKEN the services serve only callers that send it: every RPC of the
three services (unary and streaming) is refused UNAUTHENTICATED without it or with another,
before any handler runs; health and reflection stay open; the gateway's clients send it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from gateway.clients import ServiceClients
from gateway.settings import GatewaySettings
from services.common.channels import CHANNEL_OPTIONS
from services.common.server import start_server
from storyshort.imagegen.v1 import imagegen_pb2, imagegen_pb2_grpc
from storyshort.status.v1 import status_pb2, status_pb2_grpc
from storyshort.storage.v1 import storage_pb2, storage_pb2_grpc
from tests.common.test_runtime import registrations
from tests.conftest import OWN_SUBCHANNELS

TOKEN = "service-token-for-the-tests-0123"


async def calls(channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] | None) -> dict[str, grpc.StatusCode]:
    """One call of each shape to each service; the code each ended with."""
    status = status_pb2_grpc.StatusServiceStub(channel)
    storage = storage_pb2_grpc.StorageServiceStub(channel)
    imagegen = imagegen_pb2_grpc.ImageGenServiceStub(channel)
    upload = [
        storage_pb2.UploadStreamRequest(
            header=storage_pb2.UploadHeader(path="videos/v/k/scene-1.png", content_type="image/png", size=3)
        ),
        storage_pb2.UploadStreamRequest(data=b"abc"),
    ]
    attempts = {
        "status.StartVideo": status.StartVideo(
            status_pb2.StartVideoRequest(video_id="v", scene_count=1), metadata=metadata
        ),
        "status.GetVideo": status.GetVideo(status_pb2.GetVideoRequest(video_id="v"), metadata=metadata),
        "storage.UploadStream": storage.UploadStream(iter(upload), metadata=metadata),
        "imagegen.ListProviders": imagegen.ListProviders(imagegen_pb2.ListProvidersRequest(), metadata=metadata),
    }
    codes = {}
    for name, call in attempts.items():
        try:
            await call
            codes[name] = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            codes[name] = exc.code()
    return codes


async def test_only_callers_with_the_token_are_served(tmp_path: Path) -> None:
    running = await start_server("127.0.0.1", 0, registrations(tmp_path), token=TOKEN)
    address = f"127.0.0.1:{running.port}"
    try:
        async with grpc.aio.insecure_channel(address, options=[*CHANNEL_OPTIONS, *OWN_SUBCHANNELS]) as channel:
            for metadata in (None, (("authorization", "Bearer wrong-token-0123456789"),), (("authorization", TOKEN),)):
                refused = await calls(channel, metadata)
                assert set(refused.values()) == {grpc.StatusCode.UNAUTHENTICATED}, (metadata, refused)
            served = await calls(channel, (("authorization", f"Bearer {TOKEN}"),))
            assert grpc.StatusCode.UNAUTHENTICATED not in served.values(), served
            assert served["storage.UploadStream"] == grpc.StatusCode.INVALID_ARGUMENT  # 3 bytes: no PNG, but heard
            assert served["imagegen.ListProviders"] == grpc.StatusCode.OK
            with pytest.raises(grpc.aio.AioRpcError) as refusal:
                await status_pb2_grpc.StatusServiceStub(channel).GetVideo(status_pb2.GetVideoRequest(video_id="v"))
            assert "GRPC_SERVICE_TOKEN" in (refusal.value.details() or "") and TOKEN not in (
                refusal.value.details() or ""
            )
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
            assert health.status == health_pb2.HealthCheckResponse.SERVING  # probes need no token

        def listed() -> list[str]:  # (a blocking client: off the loop that serves it)
            with grpc.insecure_channel(address, options=OWN_SUBCHANNELS) as sync_channel:
                return list(ProtoReflectionDescriptorDatabase(sync_channel).get_services())

        assert "storyshort.status.v1.StatusService" in await asyncio.to_thread(listed)  # grpcurl lists without it

        # The gateway's clients send the token they are configured with.
        settings = GatewaySettings.model_validate(
            {"STATUS_ADDR": address, "STORAGE_ADDR": address, "IMAGEGEN_ADDR": address, "GRPC_SERVICE_TOKEN": TOKEN}
        )
        clients = ServiceClients.connect(settings)
        try:
            assert (await clients.upload("videos/v/k/scene-1.png", _png(), "image/png")).path
            assert (await clients.list_providers()).providers
        finally:
            await clients.close()
    finally:
        await running.server.stop(0)


def _png() -> bytes:
    from tests.fakes.images import image_bytes

    return image_bytes("PNG")
