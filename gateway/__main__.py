"""Start the gateway: `python -m gateway`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.common.config import load_settings
from services.common.logs import setup_logging
from services.common.memory import settle_heap, tune_allocator

log = logging.getLogger("gateway")


class GatewayServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its graceful shutdown (exit code 143); we handle the
    signal ourselves so a clean shutdown exits 0, like the gRPC services.

    The first SIGTERM (or Ctrl-C) starts the drain (gateway/draining.py): event streams are
    cut, /readyz and new starts answer 503, and after ``drain`` seconds uvicorn's own
    shutdown begins (listener closed, requests in flight and runs given SHUTDOWN_GRACE). A
    second signal skips what is left of the drain; a third stops at once."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain: float) -> None:
        super().__init__(config)
        self.app, self.drain = app, drain
        self._exit_later: asyncio.TimerHandle | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            settle_heap()  # started: what start-up loaded stays out of the collector's full passes

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_exit)
        yield

    def _request_exit(self) -> None:
        state = self.app.state
        if self.should_exit:
            self.force_exit = True
        elif not state.drain.draining and self.drain > 0:
            log.info("draining before shutdown", extra={"drain_s": self.drain})
            state.drain.begin()  # /readyz and starts answer 503; open streams are cut
            self._exit_later = asyncio.get_running_loop().call_later(self.drain, self._exit)
        else:
            self._exit()

    def _exit(self) -> None:
        if self._exit_later is not None:
            self._exit_later.cancel()
        self.app.state.drain.end()  # streams opened during the drain are cut too: none holds the grace
        self.should_exit = True


def main() -> None:
    settings = load_settings(GatewaySettings)
    setup_logging("gateway", settings.log_level)
    tune_allocator()
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace),
    )
    asyncio.run(GatewayServer(config, app, settings.shutdown_drain).serve())


if __name__ == "__main__":
    main()
