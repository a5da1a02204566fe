"""Shutting down without dropping anyone: SIGTERM starts a drain of SHUTDOWN_DRAIN seconds
before the listener closes.

During the drain the gateway is still reachable, so whoever was routed to it in the moment
the load balancer takes to notice gets an answer rather than a refused connection:
`/readyz` answers 503 (`draining`), so the balancer stops sending; a new start or regenerate
answers 503 UNAVAILABLE with Retry-After, so the client posts again to another replica and
nothing is started on a process about to go; reads go on as usual. Event streams are cut at
once (without an `end`: the run has not ended), so followers reconnect elsewhere instead of
holding the process through its grace; requests in flight and video runs finish within
SHUTDOWN_GRACE once the drain is over, as before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, TypeVar

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import error_response

# Seconds a refused start is told to wait before trying again (another replica answers).
RETRY_AFTER = 1


T = TypeVar("T")


class Drain:
    """Whether the gateway is draining, and when its event streams are cut: those open at
    the signal at once, those opened during the drain when it ends (the SIGTERM handler
    calls begin, then end)."""

    def __init__(self) -> None:
        self._at_signal = asyncio.Event()
        self._at_exit = asyncio.Event()

    @property
    def draining(self) -> bool:
        return self._at_signal.is_set()

    def begin(self) -> None:
        self._at_signal.set()

    def end(self) -> None:
        self.begin()
        self._at_exit.set()

    def cut_for_new_stream(self) -> asyncio.Event:
        """When a stream opened now is to be cut."""
        return self._at_exit if self.draining else self._at_signal


async def until_cut(items: AsyncGenerator[T, None], cut: asyncio.Event) -> AsyncGenerator[T, None]:
    """``items`` until they end or ``cut`` is set, whichever comes first. However it ends
    (cut, closed early, its task cancelled), the wait for the next item is cancelled and
    ``items`` closed, so its generator cleans up now."""
    stop = asyncio.ensure_future(cut.wait())
    step: asyncio.Future[T] | None = None
    try:
        while not cut.is_set():
            step = asyncio.ensure_future(anext(items))
            done, _ = await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
            if step not in done:
                return
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        stop.cancel()
        waits: list[asyncio.Future[Any]] = [stop]
        if step is not None and not step.done():
            step.cancel()  # it holds the generator: closing it first would find it running
            waits.append(step)
        await asyncio.gather(*waits, return_exceptions=True)
        await items.aclose()


class RefuseStartsWhileDraining:
    """ASGI middleware: a POST during the drain answers 503 before anything is read."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.drain.draining and scope["type"] == "http" and scope.get("method") == "POST":
            response = error_response(
                503,
                "UNAVAILABLE",
                "this gateway is shutting down; post again (another replica will answer)",
                {"Retry-After": str(RETRY_AFTER), "Connection": "close"},
                reason="SHUTTING_DOWN",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
