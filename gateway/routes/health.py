"""Liveness, readiness (the three services' gRPC health, the queue's database with
RUNS=queue, and the hop breakers), metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.deps import ClientsDep, MetricsReaderDep, RunnerDep
from gateway.routes import NO_STORE

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The gateway process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a service (or the run queue's database) is not SERVING"}})
async def readyz(request: Request, clients: ClientsDep, runner: RunnerDep) -> JSONResponse:
    """Ready when imagegen, storage and status all answer SERVING (and, with RUNS=queue,
    the run queue's database answers), and the gateway is not draining (shutting down: see
    SHUTDOWN_DRAIN)."""
    services, runs_on = await asyncio.gather(clients.health(), runner.health())
    services.update(runs_on)
    draining = bool(request.app.state.drain.draining)
    ready = not draining and all(v == "SERVING" for v in services.values())
    body = {"ready": ready, "draining": draining, "services": services, "breakers": clients.breaker_states()}
    return JSONResponse(body, status_code=200 if ready else 503, headers=NO_STORE)


# /metrics on the HTTP port, when the metrics have no port of their own (GATEWAY_METRICS_PORT).
metrics_router = APIRouter()


@metrics_router.get("/metrics", include_in_schema=False)
async def prometheus(caller: MetricsReaderDep) -> Response:
    """Spend and budget figures: with users on, for the operators' service token only."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
