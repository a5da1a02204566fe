"""Server bootstrap shared by every service: grpc.aio server with health, reflection,
raised message limits, and graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from services.common.callers import CallerCheck
from services.common.config import GRPC_MAX_MESSAGE_BYTES
from services.common.memory import settle_heap
from services.common.wire import Codecs

log = logging.getLogger("server")

SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]


@dataclass
class Registration:
    """One gRPC service to serve: its generated add function, servicer and full name."""

    add: Callable[[Any, grpc.aio.Server], None]
    servicer: object
    full_name: str


@dataclass
class RunningServer:
    server: grpc.aio.Server
    health: HealthServicer
    port: int
    names: list[str]

    async def stop(self, grace: float) -> None:
        """Health NOT_SERVING first (probes stop routing), then let in-flight calls finish."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


class _Captured:
    """Stands in for the server while a generated add function registers its handlers."""

    handlers: dict[str, grpc.RpcMethodHandler]

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.handlers = handlers


def register(reg: Registration, server: grpc.aio.Server) -> None:
    """The generated handlers, with the servicer's own wire codecs where it has them
    (``WIRE``: method name -> handler fields, services/common/wire.py)."""
    codecs: Codecs = getattr(reg.servicer, "WIRE", {})
    if not codecs:
        reg.add(reg.servicer, server)
        return
    captured = _Captured()
    reg.add(reg.servicer, captured)
    handlers = {name: handler._replace(**codecs.get(name, {})) for name, handler in captured.handlers.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(reg.full_name, handlers),))
    server.add_registered_method_handlers(reg.full_name, handlers)


async def start_server(
    host: str,
    port: int,
    registrations: list[Registration],
    tls: tuple[bytes, bytes] | None = None,
    token: str | None = None,
) -> RunningServer:
    """``tls`` is (private key, certificate chain): the server then speaks TLS only.
    ``token``: only callers that send it are served (services/common/callers.py)."""
    interceptors = [CallerCheck(token)] if token else []
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
    for reg in registrations:
        register(reg, server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [reg.full_name for reg in registrations]
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    address = f"{host}:{port}"
    if tls is not None:
        bound = server.add_secure_port(address, grpc.ssl_server_credentials([tls]))
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    for name in ["", *names]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, health, bound, names)


async def serve_until_signal(
    running: RunningServer,
    grace: float,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Block until SIGTERM or SIGINT, then shut down gracefully within ``grace`` seconds."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Serving, and a signal now handled: what start-up loaded stays out of the collector's
    # full passes (a full collection first, ~0.1 s, which a SIGTERM must not land in unhandled).
    settle_heap()
    await stop.wait()
    log.info("shutting down", extra={"grace_s": grace})
    await running.stop(grace)
    if on_stop is not None:
        await on_stop()
    log.info("stopped")
