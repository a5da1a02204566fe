"""StorageService: protobuf in, plain Python to the uploader, protobuf out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from services.common import objects
from services.common.deadlines import Deadline
from services.common.errors import InvalidArgument
from services.common.rpc import rpc
from services.common.wire import Codecs, decode_upload_part
from services.storage.uploader import Uploader, UploadResult
from storyshort.storage.v1 import storage_pb2, storage_pb2_grpc

SERVICE = "storyshort.storage.v1.StorageService"
# Own budget for one Upload (the gateway's hop budget is 30 s).
UPLOAD_BUDGET = 30.0


class StorageServicer(storage_pb2_grpc.StorageServiceServicer):
    # UploadStream's chunks arrive as views into gRPC's bytes, not copied through protobuf.
    WIRE: Codecs = {"UploadStream": {"request_deserializer": decode_upload_part}}

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
        return answer(result)

    @rpc(SERVICE)
    async def UploadStream(
        self, requests: AsyncIterator[storage_pb2.UploadStreamRequest | memoryview], context: grpc.aio.ServicerContext
    ) -> storage_pb2.UploadResponse:
        deadline = Deadline.from_context(context, UPLOAD_BUDGET)
        first = await anext(aiter(requests), None)
        if not isinstance(first, storage_pb2.UploadStreamRequest) or first.WhichOneof("part") != "header":
            raise InvalidArgument("the first message must be the header (bucket, path, content_type, size)")
        header = first.header

        async def chunks() -> AsyncIterator[bytes | memoryview]:
            async for message in requests:
                if isinstance(message, memoryview):  # a message of data alone (the wire codec)
                    yield message
                elif message.WhichOneof("part") != "data":
                    raise InvalidArgument("only the first message is a header; send the image's bytes after it")
                else:
                    yield message.data

        result = await self.uploader.receive(
            header.bucket, header.path, header.content_type, header.size, chunks(), deadline
        )
        return answer(result)

    @rpc(SERVICE)
    async def GetPublicUrl(
        self, request: storage_pb2.GetPublicUrlRequest, context: grpc.aio.ServicerContext
    ) -> storage_pb2.GetPublicUrlResponse:
        bucket = self.uploader.check_bucket(request.bucket)
        path = objects.object_path(request.path)
        return storage_pb2.GetPublicUrlResponse(public_url=self.uploader.backend.public_url(bucket, path))


def answer(result: UploadResult) -> storage_pb2.UploadResponse:
    return storage_pb2.UploadResponse(
        bucket=result.bucket,
        path=result.path,
        public_url=result.public_url,
        size=result.size,
        content_type=result.content_type,
        sha256=result.sha256,
        attempts=result.attempts,
    )
