"""gRPC stubs for the three services; every call carries a deadline from one table."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.channels import open_channel
from storyshort.imagegen.v1 import imagegen_pb2, imagegen_pb2_grpc
from storyshort.status.v1 import status_pb2, status_pb2_grpc
from storyshort.storage.v1 import storage_pb2, storage_pb2_grpc

# Per-hop budgets (DESIGN.md): imagegen gets the image budget plus 5 s to answer.
IMAGEGEN_MARGIN = 5.0
UPLOAD_TIMEOUT = 30.0
STATUS_TIMEOUT = 5.0
HEALTH_TIMEOUT = 1.0


@dataclass
class ServiceClients:
    imagegen: imagegen_pb2_grpc.ImageGenServiceStub
    storage: storage_pb2_grpc.StorageServiceStub
    status: status_pb2_grpc.StatusServiceStub
    channels: dict[str, grpc.aio.Channel]
    image_budget: float

    @classmethod
    def connect(cls, imagegen: str, storage: str, status: str, image_budget: float) -> ServiceClients:
        channels = {
            "imagegen": open_channel(imagegen),
            "storage": open_channel(storage),
            "status": open_channel(status),
        }
        return cls(
            imagegen_pb2_grpc.ImageGenServiceStub(channels["imagegen"]),
            storage_pb2_grpc.StorageServiceStub(channels["storage"]),
            status_pb2_grpc.StatusServiceStub(channels["status"]),
            channels,
            image_budget,
        )

    async def generate(self, request: imagegen_pb2.GenerateRequest) -> imagegen_pb2.GenerateResponse:
        answer: imagegen_pb2.GenerateResponse = await self.imagegen.Generate(
            request, timeout=self.image_budget + IMAGEGEN_MARGIN
        )
        return answer

    async def upload(self, request: storage_pb2.UploadRequest) -> storage_pb2.UploadResponse:
        answer: storage_pb2.UploadResponse = await self.storage.Upload(request, timeout=UPLOAD_TIMEOUT)
        return answer

    async def get_video(self, video_id: str) -> status_pb2.GetVideoResponse:
        answer: status_pb2.GetVideoResponse = await self.status.GetVideo(
            status_pb2.GetVideoRequest(video_id=video_id), timeout=STATUS_TIMEOUT
        )
        return answer

    async def create_video(self, video_id: str, scene_count: int) -> status_pb2.Video:
        answer: status_pb2.Video = await self.status.CreateVideo(
            status_pb2.CreateVideoRequest(video_id=video_id, scene_count=scene_count), timeout=STATUS_TIMEOUT
        )
        return answer

    async def update_video(self, request: status_pb2.UpdateVideoRequest) -> status_pb2.Video:
        answer: status_pb2.Video = await self.status.UpdateVideo(request, timeout=STATUS_TIMEOUT)
        return answer

    async def report_scene(self, request: status_pb2.ReportSceneRequest) -> status_pb2.Video:
        answer: status_pb2.Video = await self.status.ReportScene(request, timeout=STATUS_TIMEOUT)
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

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()
