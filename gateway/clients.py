"""gRPC stubs for the three services; every call carries a deadline from one table."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.breakers import HopBreaker
from gateway.settings import GatewaySettings
from services.common.callers import call_metadata
from services.common.channels import open_channel
from services.common.wire import Image, ImageAnswer, UploadPart, generate_method, upload_stream_method
from storyshort.imagegen.v1 import imagegen_pb2, imagegen_pb2_grpc
from storyshort.status.v1 import status_pb2, status_pb2_grpc
from storyshort.storage.v1 import storage_pb2, storage_pb2_grpc

# Per-hop deadlines (DESIGN.md): imagegen gets IMAGE_GEN_TIMEOUT plus 5 s to answer, and one
# IMAGE_GEN_TIMEOUT more to wait for its video's lane (its clock starts when a scene goes to a
# provider); upload and status deadlines come from settings (UPLOAD_TIMEOUT, STATUS_TIMEOUT).
IMAGEGEN_MARGIN = 5.0
# Seconds a call waits for a service's channel to connect before it is made anyway.
CONNECT_WAIT = 5.0
HEALTH_TIMEOUT = 1.0
# Bytes per UploadStream message: small enough that storage checks an image while the rest
# is still on the wire, large enough that per-message costs stay small (bench/RESULTS.md).
UPLOAD_CHUNK = 1024 * 1024


@dataclass
class ServiceClients:
    imagegen: imagegen_pb2_grpc.ImageGenServiceStub
    storage: storage_pb2_grpc.StorageServiceStub
    status: status_pb2_grpc.StatusServiceStub
    channels: dict[str, grpc.aio.Channel]
    image_timeout: float
    upload_timeout: float
    status_timeout: float
    breakers: dict[str, HopBreaker] = field(default_factory=dict)
    # Sent with every call: the services' token (GRPC_SERVICE_TOKEN), when they take one.
    metadata: tuple[tuple[str, str], ...] | None = None
    # Told of every video whose status this process wrote, with the video as the write
    # answered it (the event streams publish it without reading it again).
    on_write: Callable[[str, status_pb2.Video], None] = lambda _video_id, _video: None
    # The two calls that carry images, with the image's bytes kept out of protobuf messages
    # (services/common/wire.py); the same bytes on the wire as the generated stubs send.
    _generate: grpc.aio.UnaryUnaryMultiCallable = field(init=False)
    _upload_stream: grpc.aio.StreamUnaryMultiCallable = field(init=False)

    def __post_init__(self) -> None:
        self._generate = generate_method(self.channels["imagegen"])
        self._upload_stream = upload_stream_method(self.channels["storage"])

    @classmethod
    def connect(cls, settings: GatewaySettings) -> ServiceClients:
        ca = settings.grpc_tls_ca
        channels = {
            "imagegen": open_channel(settings.imagegen_addr, ca),
            "storage": open_channel(settings.storage_addr, ca),
            "status": open_channel(settings.status_addr, ca),
        }
        return cls(
            imagegen_pb2_grpc.ImageGenServiceStub(channels["imagegen"]),
            storage_pb2_grpc.StorageServiceStub(channels["storage"]),
            status_pb2_grpc.StatusServiceStub(channels["status"]),
            channels,
            settings.image_gen_timeout,
            settings.upload_timeout,
            settings.status_timeout,
            {
                name: HopBreaker(name, channel, settings.hop_breaker_threshold, settings.hop_breaker_probe_every)
                for name, channel in channels.items()
            },
            call_metadata(settings.service_token()),
        )

    async def generate(self, request: imagegen_pb2.GenerateRequest) -> ImageAnswer:
        """Raises BreakerOpen at once while imagegen is known not to answer."""
        async with self._calling("imagegen", skippable=True):
            answer: ImageAnswer = await self._generate(
                request, timeout=2 * self.image_timeout + IMAGEGEN_MARGIN, metadata=self.metadata
            )
        return answer

    async def generate_stream(
        self, request: imagegen_pb2.GenerateRequest
    ) -> AsyncIterator[imagegen_pb2.PartialImage | ImageAnswer]:
        """GenerateStream: the partial images imagegen sends, then its answer (the image held
        apart from the other fields, as generate() answers it). Raises BreakerOpen at once
        while imagegen is known not to answer."""
        async with self._calling("imagegen", skippable=True):
            call = self.imagegen.GenerateStream(
                request, timeout=2 * self.image_timeout + IMAGEGEN_MARGIN, metadata=self.metadata
            )
            async for frame in call:
                if frame.WhichOneof("frame") == "partial":
                    yield frame.partial
                else:
                    final = frame.final
                    image = final.image
                    final.ClearField("image")
                    yield ImageAnswer(image, final)

    async def report_preview(self, video_id: str, scene: int, url: str, index: int) -> status_pb2.Video:
        request = status_pb2.ReportPreviewRequest(video_id=video_id, scene=scene, url=url, index=index)
        async with self._calling("status"):
            answer: status_pb2.Video = await self.status.ReportPreview(
                request, timeout=self.status_timeout, metadata=self.metadata
            )
        self.on_write(video_id, answer)
        return answer

    async def list_providers(self) -> imagegen_pb2.ListProvidersResponse:
        """Raises ServiceDown or ServiceRefused (gateway/breakers.py), as every call here does."""
        async with self._calling("imagegen"):
            answer: imagegen_pb2.ListProvidersResponse = await self.imagegen.ListProviders(
                imagegen_pb2.ListProvidersRequest(), timeout=self.status_timeout, metadata=self.metadata
            )
        return answer

    async def upload(self, path: str, data: Image, content_type: str) -> storage_pb2.UploadResponse:
        """Stream the image to storage (UploadStream): storage checks and hashes each chunk
        as it arrives, so the image is stored as soon as its last byte is in."""
        # A storage restart is waited out inside the deadline (wait_for_ready) instead of
        # failing the scene.
        async with self._calling("storage", connect=False):
            answer: storage_pb2.UploadResponse = await self._upload_stream(
                upload_chunks(path, data, content_type),
                timeout=self.upload_timeout,
                wait_for_ready=True,
                metadata=self.metadata,
            )
        return answer

    async def get_video(self, video_id: str) -> status_pb2.GetVideoResponse:
        """Raises BreakerOpen at once while the status service is known not to answer."""
        async with self._calling("status", skippable=True):
            answer: status_pb2.GetVideoResponse = await self.status.GetVideo(
                status_pb2.GetVideoRequest(video_id=video_id), timeout=self.status_timeout, metadata=self.metadata
            )
        return answer

    async def start_video(
        self,
        video_id: str,
        prompts: dict[int, str],
        owner: str = "",
        limits: status_pb2.UserLimits | None = None,
    ) -> status_pb2.Video:
        """Mark a run's start: the video generating, its scene count and its prompts; with
        an owner, someone else's video is NOT_FOUND and the start counts against ``limits``."""
        request = status_pb2.StartVideoRequest(
            video_id=video_id,
            scene_count=len(prompts),
            prompts=[status_pb2.ScenePrompt(scene=n, prompt=p) for n, p in sorted(prompts.items())],
            owner=owner,
            limits=limits,
        )
        async with self._calling("status"):
            answer: status_pb2.Video = await self.status.StartVideo(
                request, timeout=self.status_timeout, metadata=self.metadata
            )
        self.on_write(video_id, answer)
        return answer

    async def admit_start(
        self, video_id: str, scene_count: int, owner: str, limits: status_pb2.UserLimits | None
    ) -> status_pb2.Video:
        """A start that will wait its turn: someone else's video is NOT_FOUND, and the start
        counts against the user's ``limits`` now (RESOURCE_EXHAUSTED over one)."""
        request = status_pb2.AdmitStartRequest(video_id=video_id, scene_count=scene_count, owner=owner, limits=limits)
        async with self._calling("status"):
            answer: status_pb2.Video = await self.status.AdmitStart(
                request, timeout=self.status_timeout, metadata=self.metadata
            )
        return answer

    async def update_video(self, request: status_pb2.UpdateVideoRequest) -> status_pb2.Video:
        async with self._calling("status"):
            answer: status_pb2.Video = await self.status.UpdateVideo(
                request, timeout=self.status_timeout, metadata=self.metadata
            )
        self.on_write(request.video_id, answer)
        return answer

    async def report_scene(self, request: status_pb2.ReportSceneRequest) -> status_pb2.Video:
        async with self._calling("status"):
            answer: status_pb2.Video = await self.status.ReportScene(
                request, timeout=self.status_timeout, metadata=self.metadata
            )
        self.on_write(request.video_id, answer)
        return answer

    async def quote_image(self, size: str, quality: str = "") -> imagegen_pb2.ImageQuote:
        async with self._calling("imagegen", skippable=True):
            answer: imagegen_pb2.ImageQuote = await self.imagegen.QuoteImage(
                imagegen_pb2.QuoteImageRequest(size=size, quality=quality),
                timeout=self.status_timeout,
                metadata=self.metadata,
            )
        return answer

    async def reserve_spend(self, request: status_pb2.ReserveSpendRequest) -> status_pb2.SpendReservation:
        async with self._calling("status", skippable=True):
            answer: status_pb2.SpendReservation = await self.status.ReserveSpend(
                request, timeout=self.status_timeout, metadata=self.metadata
            )
        return answer

    async def release_spend(self, reservation_id: str) -> None:
        async with self._calling("status", skippable=True):
            await self.status.ReleaseSpend(
                status_pb2.ReleaseSpendRequest(reservation_id=reservation_id),
                timeout=self.status_timeout,
                metadata=self.metadata,
            )

    async def get_spend(self, since_ms: int, owner: str = "") -> status_pb2.Spend:
        async with self._calling("status"):
            answer: status_pb2.Spend = await self.status.GetSpend(
                status_pb2.GetSpendRequest(since_ms=since_ms, owner=owner),
                timeout=self.status_timeout,
                metadata=self.metadata,
            )
        return answer

    async def health(self) -> dict[str, str]:
        """Each service's gRPC health, asked with a short deadline."""
        result: dict[str, str] = {}
        for name, channel in self.channels.items():
            try:
                answer = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=HEALTH_TIMEOUT
                )
                result[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            except grpc.aio.AioRpcError as exc:
                result[name] = exc.code().name
        return result

    @asynccontextmanager
    async def _calling(self, service: str, *, skippable: bool = False, connect: bool = True) -> AsyncIterator[None]:
        """Every call to a service: skipped at once while its breaker is open (``skippable``:
        calls that have an answer without the service), waiting briefly for a channel that
        is still connecting, its failure raised as a named error that the breaker learns from."""
        breaker = self.breakers[service]
        if skippable:
            breaker.check()
        if connect:
            await self._connected(service)
        async with breaker.watching():
            yield

    async def _connected(self, service: str) -> None:
        """A service that is still starting (or reconnecting) is waited for, briefly, so a
        call is not failed while its channel connects; one that stays away fails the call
        as it would have (and its breaker learns)."""
        channel = self.channels[service]
        if channel.get_state(try_to_connect=True) == grpc.ChannelConnectivity.READY:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(channel.channel_ready(), CONNECT_WAIT)

    def breaker_states(self) -> dict[str, str]:
        return {name: breaker.state for name, breaker in self.breakers.items()}

    async def close(self) -> None:
        for breaker in self.breakers.values():
            await breaker.close()
        for channel in self.channels.values():
            await channel.close()


def upload_chunks(path: str, data: Image, content_type: str, bucket: str = "") -> Iterator[UploadPart]:
    """UploadStream's messages for one image (for upload_stream_method): the header, then
    views of the bytes in order, each sent as a message of data alone."""
    header = storage_pb2.UploadHeader(bucket=bucket, path=path, content_type=content_type, size=len(data))
    yield storage_pb2.UploadStreamRequest(header=header)
    view = memoryview(data)
    for start in range(0, len(view), UPLOAD_CHUNK):
        yield view[start : start + UPLOAD_CHUNK]
