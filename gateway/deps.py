"""What a route needs, as types (FastAPI dependencies): the settings, the service clients,
the runner, the gateway's memory of status answers, and who is calling. They are
coroutines: FastAPI runs a plain function dependency in a worker thread, a hop per request
that the status route cannot afford (bench/RESULTS.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from gateway.answers import LastKnown
from gateway.auth import Authenticator, Caller
from gateway.budget import BudgetGuard
from gateway.clients import ServiceClients
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


async def _budget(request: Request) -> BudgetGuard:
    budget: BudgetGuard = request.app.state.budget
    return budget


async def _authenticator(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


# The security schemes (they appear in the OpenAPI document): a bearer token, or for what
# a browser cannot give a header (EventSource, a page link) the token in `access_token`.
_BEARER = HTTPBearer(auto_error=False, description="a Supabase access token, or the service token")
_QUERY = APIKeyQuery(name="access_token", auto_error=False, description="the access token, where no header fits")


async def writer(
    auth: Annotated[Authenticator, Depends(_authenticator)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
) -> Caller:
    """Who may write: the service token, or (AUTH_REQUIRED) a signed-in user."""
    return await auth.caller(credentials.credentials if credentials else None, write=True)


async def reader(
    auth: Annotated[Authenticator, Depends(_authenticator)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
    access_token: Annotated[str | None, Security(_QUERY)],
) -> Caller:
    """Who may read: anyone when users are off; else the service token or a signed-in user."""
    return await auth.caller(credentials.credentials if credentials else access_token, write=False)


SettingsDep = Annotated[GatewaySettings, Depends(_settings)]
ClientsDep = Annotated[ServiceClients, Depends(_clients)]
RunnerDep = Annotated[Runner, Depends(_runner)]
LastKnownDep = Annotated[LastKnown, Depends(_last_known)]
EventsDep = Annotated[VideoEvents, Depends(_events)]
BudgetDep = Annotated[BudgetGuard, Depends(_budget)]
WriterDep = Annotated[Caller, Depends(writer)]
ReaderDep = Annotated[Caller, Depends(reader)]
