"""Start the storage service: `python -m services.storage`."""

from __future__ import annotations

import asyncio
import logging

from services.common.config import StorageSettings, load_settings
from services.common.logs import register_secret, setup_logging
from services.common.memory import tune_allocator
from services.common.metrics import serve_metrics
from services.common.server import Registration, serve_until_signal, start_server
from services.storage.backends.base import StorageBackend
from services.storage.backends.local import LocalBackend
from services.storage.servicer import SERVICE, StorageServicer
from services.storage.uploader import Uploader
from storyshort.storage.v1 import storage_pb2_grpc

log = logging.getLogger("storage")


def build_backend(settings: StorageSettings) -> StorageBackend:
    if settings.backend == "supabase":
        from services.storage.backends.supabase import SupabaseBackend

        if not settings.supabase_url or not settings.supabase_service_role_key:
            raise SystemExit("STORAGE_BACKEND=supabase needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY")
        key = settings.supabase_service_role_key.get_secret_value()
        register_secret(key)
        return SupabaseBackend(settings.supabase_url, key)
    settings.storage_root.mkdir(parents=True, exist_ok=True)
    return LocalBackend(settings.storage_root, settings.public_base_url)


async def main() -> None:
    settings = load_settings(StorageSettings)
    setup_logging("storage", settings.log_level)
    tune_allocator()
    serve_metrics(settings.metrics_port, settings.grpc_host)
    backend = build_backend(settings)
    uploader = Uploader(backend, settings.bucket)
    running = await start_server(
        settings.grpc_host,
        settings.port,
        [Registration(storage_pb2_grpc.add_StorageServiceServicer_to_server, StorageServicer(uploader), SERVICE)],
        settings.server_credentials(),
        settings.service_token(),
    )
    log.info("listening", extra={"address": f"{settings.grpc_host}:{running.port}", "backend": backend.name})
    await serve_until_signal(running, settings.shutdown_grace, backend.close)


if __name__ == "__main__":
    asyncio.run(main())
