"""Apply the schema in sql/ to the configured store: `make migrate` (safe to run twice)."""

from __future__ import annotations

import asyncio
import logging

from services.common.config import StatusSettings
from services.common.logs import setup_logging
from services.status.wiring import build_store

log = logging.getLogger("migrate")


async def main() -> None:
    settings = StatusSettings()
    setup_logging("status-migrate", settings.log_level)
    store = build_store(settings)
    try:
        await store.migrate()
    finally:
        await store.close()
    log.info("schema applied", extra={"store": store.name})


if __name__ == "__main__":
    asyncio.run(main())
