"""StorageService: protobuf in, plain Python to the uploader, protobuf out."""

from __future__ import annotations

import grpc

from services.common import objects
from services.common.deadlines import Deadline
from services.common.rpc import rpc
from services.storage.uploader import Uploader
from storyshort.storage.v1 import storage_pb2, storage_pb2_grpc

SERVICE = "storyshort.storage.v1.StorageService"
# Own budget for one Upload (the gateway's hop budget is 30 s).
UPLOAD_BUDGET = 30.0


class StorageServicer(storage_pb2_grpc.StorageServiceServicer):
    def __init__(self, uploader: Uploader) -> None:
        self.uploader = uploader

    @rpc(SERVICE)
    async def EnsureBucket(
        self, request: storage_pb2.EnsureBucketRequest, context: grpc.aio.ServicerContext
    ) -> storage_pb2.EnsureBucketResponse:
        bucket = self.uploader.check_bucket(request.bucket)
        created = await self.uploader.ensurer.ensure(Deadline.from_context(context, UPLOAD_BUDGET))
        return storage_pb2.EnsureBucketResponse(bucket=bucket, created=created)

    @rpc(SERVICE)
    async def Upload(
        self, request: storage_pb2.UploadRequest, context: grpc.aio.ServicerContext
    ) -> storage_pb2.UploadResponse:
        result = await self.uploader.upload(
            request.bucket,
            request.path,
            request.data,
            request.content_type,
            Deadline.from_context(context, UPLOAD_BUDGET),
        )
        return storage_pb2.UploadResponse(
            bucket=result.bucket,
            path=result.path,
            public_url=result.public_url,
            size=result.size,
            content_type=result.content_type,
            sha256=result.sha256,
            attempts=result.attempts,
        )

    @rpc(SERVICE)
    async def GetPublicUrl(
        self, request: storage_pb2.GetPublicUrlRequest, context: grpc.aio.ServicerContext
    ) -> storage_pb2.GetPublicUrlResponse:
        bucket = self.uploader.check_bucket(request.bucket)
        path = objects.object_path(request.path)
        return storage_pb2.GetPublicUrlResponse(public_url=self.uploader.backend.public_url(bucket, path))
