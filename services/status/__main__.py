"""Start the status service: `python -m services.status` (applies the schema first)."""

from __future__ import annotations

import asyncio
import logging

from services.common.config import StatusSettings, load_settings
from services.common.logs import setup_logging
from services.common.metrics import serve_metrics
from services.common.server import Registration, serve_until_signal, start_server
from services.status.book import StatusBook
from services.status.servicer import SERVICE, StatusServicer
from services.status.stores.base import StoreUnavailable
from services.status.stores.registry import build_store
from storyshort.status.v1 import status_pb2_grpc

log = logging.getLogger("status")


async def main() -> None:
    settings = load_settings(StatusSettings)
    setup_logging("status", settings.log_level)
    serve_metrics(settings.metrics_port, settings.grpc_host)
    store = build_store(settings)
    try:
        await store.migrate()
    except StoreUnavailable as exc:
        # Reads degrade instead of failing: start anyway and say so.
        log.error("could not apply the schema; starting degraded", extra={"error": str(exc)})
    book = StatusBook(store, attempt_timeout=settings.attempt_timeout, stall_after=settings.stall_after)
    running = await start_server(
        settings.grpc_host,
        settings.port,
        [Registration(status_pb2_grpc.add_StatusServiceServicer_to_server, StatusServicer(book), SERVICE)],
        settings.server_credentials(),
        settings.service_token(),
    )
    log.info("listening", extra={"address": f"{settings.grpc_host}:{running.port}", "store": store.name})
    watcher = asyncio.create_task(book.watch_stalled(min(60.0, settings.stall_after / 2)))

    async def close() -> None:
        watcher.cancel()
        await store.close()

    await serve_until_signal(running, settings.shutdown_grace, close)


if __name__ == "__main__":
    asyncio.run(main())
