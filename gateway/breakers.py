"""Breakers on the gateway's hops to status, storage and imagegen.

A service that times out or is unreachable `threshold` times in a row opens its breaker.
While it is open, reads that can be answered without the service fail fast with
:class:`BreakerOpen` (the status route answers the last known state at once; a scene gets
the gateway's placeholder instead of waiting out imagegen's deadline), and so do starts,
which status must record, while the service gives no answer at all (a 503 with Retry-After
at once, not STATUS_TIMEOUT each; a status service that answers that its store is down is
still asked). Writes that must not
be lost (scene reports, run ends, uploads) still go out with their retries; their answers
teach the breaker too. In the background, a probe asks the service's gRPC health service
every `probe_every` seconds and closes the breaker when it answers SERVING."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway import metrics
from gateway.errors import BreakerOpen, ServiceDown, ServiceRefused
from services.common.status_details import from_trailers

log = logging.getLogger("breakers")
# The codes that say the service is not answering, as opposed to answering "no".
SICK = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE})
# A sick call that the service never answered (every answer of ours names a reason): what
# the caller is told, instead of gRPC's "Deadline Exceeded" or the address it failed to reach.
NOT_ANSWERING = {
    grpc.StatusCode.DEADLINE_EXCEEDED: "the {service} service did not answer in time; try again",
    grpc.StatusCode.UNAVAILABLE: "the {service} service cannot be reached; try again",
}
PROBE_TIMEOUT = 1.0


class HopBreaker:
    def __init__(self, service: str, channel: grpc.aio.Channel, threshold: int, probe_every: float) -> None:
        self.service = service
        self.channel = channel
        self.threshold = threshold
        self.probe_every = probe_every
        self.failures = 0
        self.opened_at: float | None = None
        # The last failure was no answer at all (a timeout, unreachable), not the service
        # answering that it cannot (its store down, with a reason of its own).
        self.silent = False
        self._probe: asyncio.Task[None] | None = None
        metrics.HOP_BREAKER_OPEN.labels(service).set(0)

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    @property
    def state(self) -> str:
        return "open" if self.is_open else "closed"

    def check(self) -> None:
        """For a call that may be skipped: raise BreakerOpen while the breaker is open."""
        if self.opened_at is not None:
            raise BreakerOpen(self.service, self.opened_at, self.probe_every)

    def check_answering(self) -> None:
        """For a call that is worth making whenever the service answers, even with an error
        (a start): raise BreakerOpen while the breaker is open because the service gave no
        answer at all, so the caller is not held its whole timeout. A service that answers
        quickly that it cannot (its store down) is still asked: its answer says why, and
        the first call after it recovers goes through."""
        if self.silent:
            self.check()

    @asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        """Learn from the call inside the block (its success, or how it failed) and raise
        its failure as a named error."""
        try:
            yield
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or exc.code().name.lower()
            rich = from_trailers(exc.trailing_metadata())
            if code in SICK:
                self.silent = not rich.reason  # every answer of the service's own names a reason
                self.failure(code.name)
                if self.silent:  # the channel's own words ("Deadline Exceeded", an address): ours
                    details = NOT_ANSWERING[code].format(service=self.service)
                raise ServiceDown(self.service, code, details, rich) from exc
            self.success()  # it answered
            raise ServiceRefused(self.service, code, details, rich) from exc
        self.success()

    def success(self) -> None:
        self.failures = 0
        if self.opened_at is not None:
            self._close("a call succeeded")

    def failure(self, why: str) -> None:
        self.failures += 1
        if self.opened_at is None and self.failures >= self.threshold:
            self.opened_at = time.monotonic()
            metrics.HOP_BREAKER_OPEN.labels(self.service).set(1)
            metrics.HOP_BREAKER_TRANSITIONS.labels(self.service, "open").inc()
            log.error(
                "service not answering; reads answer from what the gateway knows until a health probe succeeds",
                extra={"service": self.service, "why": why, "failures": self.failures},
            )
            self._probe = asyncio.create_task(self._probe_until_well(), name=f"probe-{self.service}")

    def _close(self, why: str) -> None:
        self.opened_at, self.failures = None, 0
        metrics.HOP_BREAKER_OPEN.labels(self.service).set(0)
        metrics.HOP_BREAKER_TRANSITIONS.labels(self.service, "closed").inc()
        log.info("service answers again; breaker closed", extra={"service": self.service, "why": why})

    async def _probe_until_well(self) -> None:
        stub = health_pb2_grpc.HealthStub(self.channel)
        while self.opened_at is not None:
            await asyncio.sleep(self.probe_every)
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=PROBE_TIMEOUT)
            except grpc.aio.AioRpcError:
                continue
            if answer.status == health_pb2.HealthCheckResponse.SERVING and self.opened_at is not None:
                self._close("health probe answered SERVING")

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
