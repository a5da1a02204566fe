"""Start the gateway: `python -m gateway`."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Generator

import uvicorn

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.common.config import load_settings
from services.common.logs import setup_logging
from services.common.memory import tune_allocator


class GatewayServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its graceful shutdown (exit code 143); we handle the
    signal ourselves so a clean shutdown exits 0, like the gRPC services."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_exit)
        yield

    def _request_exit(self) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


def main() -> None:
    settings = load_settings(GatewaySettings)
    setup_logging("gateway", settings.log_level)
    tune_allocator()
    config = uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace),
    )
    asyncio.run(GatewayServer(config).serve())


if __name__ == "__main__":
    main()
