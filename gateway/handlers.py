"""Every error answer is the JSON error body: FastAPI's validation errors, Starlette's HTTP
errors, our own named errors, failed service calls (mapped the way grpc-gateway maps gRPC codes), and
anything unexpected (a 500 that never shows a traceback)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.auth import Authenticator, bearer
from gateway.errors import CODE_FOR_HTTP, CallFailed, HTTPError, error_response, service_error_response
from services.common.errors import InvalidArgument

log = logging.getLogger("gateway")


async def _bad_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    refused = await _unauthenticated(request)
    if refused is not None:  # who is asking comes first: a stranger learns nothing of the rules
        return refused
    problems = [_problem(err) for err in exc.errors()[:5]]
    if not problems:
        return error_response(400, "INVALID_ARGUMENT", "invalid request")
    violations = [{"field": field, "description": text} for field, text, _ in problems if field]
    more: dict[str, object] = {"reason": problems[0][2]}
    if violations:
        more["fieldViolations"] = violations
    return error_response(400, "INVALID_ARGUMENT", "; ".join(text for _, text, _ in problems), None, **more)


BODY_SHAPE = "the body must be a JSON object, sent with Content-Type: application/json"


def _problem(err: Mapping[str, Any]) -> tuple[str, str, str]:
    """One of FastAPI's validation errors as (field, what a person can act on, reason); the
    field is written as the service rules write it (`scenes[1].prompt`), "" for the body."""
    source, *path = err.get("loc", ()) or ("",)
    kind = err.get("type", "")
    if kind == "json_invalid":  # its path is the character where parsing failed
        why = (err.get("ctx") or {}).get("error", "")
        at = f" at character {path[0]}" if path else ""
        return "", f"the body is not valid JSON ({why}{at}); {BODY_SHAPE}", "BODY_NOT_JSON"
    if source == "body" and not path:  # no body, a list, form fields, JSON sent as text/plain
        return "", BODY_SHAPE, "BODY_NOT_OBJECT"
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return field, f"{field}: {err.get('msg')}", "FIELD_MISSING" if kind == "missing" else "FIELD_INVALID"


async def _unauthenticated(request: Request) -> JSONResponse | None:
    """The 401 (or 403) a request without valid credentials gets, whatever its body: FastAPI
    parses the body before a route's dependencies run, so the check is made here again."""
    auth: Authenticator | None = getattr(request.app.state, "auth", None)
    if auth is None or request.method not in ("POST", "GET"):
        return None
    token = bearer(request.headers.get("authorization"))
    if token is None and request.method == "GET":  # the browser routes' ?access_token=
        token = request.query_params.get("access_token")
    try:
        await auth.caller(token, write=request.method == "POST")
    except HTTPError as refused:
        return await _http_error(request, refused)
    return None


async def _http_exception(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = CODE_FOR_HTTP.get(exc.status_code, "UNKNOWN" if exc.status_code < 500 else "INTERNAL")
    return error_response(exc.status_code, code, str(exc.detail))


async def _invalid(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidArgument)
    violations = [{"field": exc.field, "description": str(exc)}] if exc.field else None
    more: dict[str, object] = {"reason": exc.reason}
    if violations:
        more["fieldViolations"] = violations
    return error_response(400, "INVALID_ARGUMENT", str(exc), None, **more)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPError)
    more = {"reason": exc.reason} if exc.reason else {}
    return error_response(exc.status, exc.code, exc.message, exc.headers, **more)


async def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CallFailed)
    return service_error_response(exc)


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return error_response(500, "INTERNAL", "internal error; see the gateway logs")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _bad_request)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(InvalidArgument, _invalid)
    app.add_exception_handler(HTTPError, _http_error)
    app.add_exception_handler(CallFailed, _service_error)
    app.add_exception_handler(Exception, _unexpected)
