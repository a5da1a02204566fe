"""What a route needs, as types (FastAPI dependencies): the settings, the service clients,
the runner, the status reader (status answers, checked against the caller), and who is calling. They are
coroutines: FastAPI runs a plain function dependency in a worker thread, a hop per request
that the status route cannot afford (bench/RESULTS.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from gateway.auth import ANONYMOUS, Authenticator, Caller, unauthenticated
from gateway.budget import BudgetGuard
from gateway.clients import ServiceClients
from gateway.errors import HTTPError
from gateway.events import VideoEvents
from gateway.runner import Runner
from gateway.settings import GatewaySettings
from gateway.status_reader import StatusReader


async def _settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


async def _clients(request: Request) -> ServiceClients:
    clients: ServiceClients = request.app.state.clients
    return clients


async def _runner(request: Request) -> Runner:
    runner: Runner = request.app.state.runs
    return runner


async def _status(request: Request) -> StatusReader:
    status: StatusReader = request.app.state.status
    return status


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
) -> Caller:
    """Who may read: anyone when users are off; else the service token or a signed-in user."""
    return await auth.caller(credentials.credentials if credentials else None, write=False)


async def browser_reader(
    auth: Annotated[Authenticator, Depends(_authenticator)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
    access_token: Annotated[str | None, Security(_QUERY)],
) -> Caller:
    """Who may read where a browser cannot send a header (an EventSource, a link to the
    video page): the header, or a user's access token in `?access_token=`. The service
    token is never taken from a URL (URLs end up in logs and histories)."""
    if credentials:
        return await auth.caller(credentials.credentials, write=False)
    if access_token and auth.is_service_token(access_token):
        raise unauthenticated("the service token is not accepted in a URL; send it as 'Authorization: Bearer'")
    return await auth.caller(access_token, write=False)


async def metrics_reader(
    auth: Annotated[Authenticator, Depends(_authenticator)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
) -> Caller:
    """Who may read the metrics on the HTTP port: anyone with users off; else operators."""
    if not auth.users_on:
        return ANONYMOUS
    caller = await auth.caller(credentials.credentials if credentials else None, write=False)
    if not caller.operator:
        raise HTTPError(403, "PERMISSION_DENIED", "the metrics are for operators: send the service token")
    return caller


SettingsDep = Annotated[GatewaySettings, Depends(_settings)]
ClientsDep = Annotated[ServiceClients, Depends(_clients)]
RunnerDep = Annotated[Runner, Depends(_runner)]
StatusDep = Annotated[StatusReader, Depends(_status)]
EventsDep = Annotated[VideoEvents, Depends(_events)]
BudgetDep = Annotated[BudgetGuard, Depends(_budget)]
WriterDep = Annotated[Caller, Depends(writer)]
ReaderDep = Annotated[Caller, Depends(reader)]
BrowserReaderDep = Annotated[Caller, Depends(browser_reader)]
MetricsReaderDep = Annotated[Caller, Depends(metrics_reader)]
