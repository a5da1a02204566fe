"""The storage service over a real gRPC server with the `supabase` client talking to the
Supabase fake: shared by the storage tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from services.common.server import Registration
from services.storage.backends.supabase import SupabaseBackend
from services.storage.servicer import SERVICE, StorageServicer
from services.storage.uploader import Uploader
from storyshort.storage.v1 import storage_pb2_grpc
from tests.conftest import grpc_server
from tests.fakes import supabase_fake as sf

BUCKET = "renders-images"


@pytest.fixture
def fake() -> Iterator[sf.FakeSupabase]:
    with sf.FakeSupabase() as server:
        yield server


async def serve(fake: sf.FakeSupabase, key: str) -> AsyncIterator[storage_pb2_grpc.StorageServiceStub]:
    """A storage service on the fake with this service-role key, and a stub to call it."""
    backend = SupabaseBackend(fake.url, key)
    reg = Registration(
        storage_pb2_grpc.add_StorageServiceServicer_to_server, StorageServicer(Uploader(backend, BUCKET)), SERVICE
    )
    async with grpc_server(reg) as (_running, channel):
        yield storage_pb2_grpc.StorageServiceStub(channel)


@pytest.fixture
async def storage(fake: sf.FakeSupabase) -> AsyncIterator[storage_pb2_grpc.StorageServiceStub]:
    async for stub in serve(fake, fake.key):
        yield stub
