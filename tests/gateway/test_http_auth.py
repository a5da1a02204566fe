"""Who may ask what over HTTP, in-process (no service is called before these answers):
credentials are checked before a body is parsed, `?access_token=` is taken only where a
browser cannot send a header and never for the service token, the metrics answer operators
only with users on, the docs are a setting, anonymous sign-ins are refused unless allowed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings

SECRET = "legacy-jwt-secret-for-tests-0123456789abcdef"
ISSUER = "https://project.supabase.example/auth/v1"
SERVICE = "operator-service-token-0123456789"


def token(user: str = "user-1", **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": user, "aud": "authenticated", "iss": ISSUER, "iat": now, "exp": now + 600, **claims}
    return jwt.encode(payload, SECRET, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def client_for(**env: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings.model_validate(
        {
            "AUTH_REQUIRED": "true",
            "SUPABASE_JWT_SECRET": SECRET,
            "AUTH_ISSUER": ISSUER,
            "GATEWAY_API_KEY": SERVICE,
            **env,
        }
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async for made in client_for():
        yield made


async def test_a_malformed_body_without_a_token_is_401_not_400(client: httpx.AsyncClient) -> None:
    malformed = b'{"videoId": "v", "scenes": ['
    headers = {"content-type": "application/json"}
    stranger = await client.post("/api/generate-preview-images", content=malformed, headers=headers)
    assert stranger.status_code == 401 and stranger.json()["error"]["code"] == "UNAUTHENTICATED"
    assert "scenes" not in stranger.text, "nothing of the rules is told to a stranger"
    user = await client.post("/api/generate-preview-images", content=malformed, headers={**headers, **bearer(token())})
    assert user.status_code == 400 and user.json()["error"]["code"] == "INVALID_ARGUMENT"


async def test_access_token_in_the_url_only_where_a_browser_needs_it_and_never_the_service_token(
    client: httpx.AsyncClient,
) -> None:
    # The status read takes a header only (a token in a URL ends up in logs and histories).
    status = await client.get("/api/video-status", params={"videoId": "v", "access_token": token()})
    assert status.status_code == 401
    for path in ("/api/videos/v/events", "/videos/v"):
        refused = await client.get(path, params={"access_token": SERVICE})
        assert refused.status_code == 401 and "not accepted in a URL" in refused.json()["error"]["message"]
        assert SERVICE not in refused.text


async def test_metrics_answer_operators_only_with_users_on(client: httpx.AsyncClient) -> None:
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/metrics", headers=bearer(token()))).status_code == 403
    served = await client.get("/metrics", headers=bearer(SERVICE))
    assert served.status_code == 200 and "storyshort_gateway" in served.text


async def test_the_docs_are_a_setting() -> None:
    async for client in client_for():
        assert (await client.get("/openapi.json")).status_code == 200
        assert (await client.get("/docs")).status_code == 200
    async for client in client_for(API_DOCS="false"):
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert (await client.get(path)).status_code == 404, path


async def test_anonymous_sign_ins_are_refused_unless_allowed() -> None:
    anonymous = bearer(token("anon-1", is_anonymous=True))
    malformed = {"content-type": "application/json", **anonymous}
    async for client in client_for():
        refused = await client.post("/api/generate-preview-images", content=b"{", headers=malformed)
        assert refused.status_code == 403 and refused.json()["error"]["reason"] == "ANONYMOUS_USER"
    async for client in client_for(AUTH_ALLOW_ANONYMOUS="true"):
        let_in = await client.post("/api/generate-preview-images", content=b"{", headers=malformed)
        assert let_in.status_code == 400  # past the check: the body's own problem answers
