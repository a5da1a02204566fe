"""What a route needs, as types (FastAPI dependencies): the settings, the service clients,
the runner, the gateway's memory of status answers, and the API key check. They are
coroutines: FastAPI runs a plain function dependency in a worker thread, a hop per request
that the status route cannot afford (bench/RESULTS.md)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from gateway.answers import LastKnown
from gateway.clients import ServiceClients
from gateway.errors import HTTPError
from gateway.events import VideoEvents
from gateway.runner import Runner
from gateway.settings import GatewaySettings


async def _settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


async def _clients(request: Request) -> ServiceClients:
    clients: ServiceClients = request.app.state.clients
    return clients


async def _runner(request: Request) -> Runner:
    runner: Runner = request.app.state.runs
    return runner


async def _last_known(request: Request) -> LastKnown:
    last_known: LastKnown = request.app.state.last_known
    return last_known


async def _events(request: Request) -> VideoEvents:
    events: VideoEvents = request.app.state.events
    return events


async def require_api_key(request: Request, settings: Annotated[GatewaySettings, Depends(_settings)]) -> None:
    """With GATEWAY_API_KEY set, the request must carry it as a bearer token (constant-time
    comparison)."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise HTTPError(401, "UNAUTHENTICATED", "send the gateway's API key as 'Authorization: Bearer <key>'")


SettingsDep = Annotated[GatewaySettings, Depends(_settings)]
ClientsDep = Annotated[ServiceClients, Depends(_clients)]
RunnerDep = Annotated[Runner, Depends(_runner)]
LastKnownDep = Annotated[LastKnown, Depends(_last_known)]
EventsDep = Annotated[VideoEvents, Depends(_events)]
ApiKeyDep = Depends(require_api_key)
