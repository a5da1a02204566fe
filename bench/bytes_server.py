"""A gRPC server that answers every call with the same bytes and does nothing else: no
protobuf (identity codecs), no handler work, the services' server options and allocator
settings. `image-answer` compares imagegen's Generate with it to show what gRPC itself
costs. Reads the bytes on stdin (to its end), prints its port and serves until killed
(`python -m bench.bytes_server < image.png`)."""

from __future__ import annotations

import asyncio
import sys

import grpc

from services.common.memory import tune_allocator
from services.common.server import SERVER_OPTIONS

METHOD = "/bench.Bytes/Get"


def identity(data: bytes) -> bytes:
    return data


async def main() -> None:
    tune_allocator()
    data = sys.stdin.buffer.read()

    async def get(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return data

    server = grpc.aio.server(options=SERVER_OPTIONS)
    handler = grpc.unary_unary_rpc_method_handler(get, request_deserializer=identity, response_serializer=identity)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Bytes", {"Get": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
