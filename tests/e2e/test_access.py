"""Who may call: TLS between the gateway and the gRPC services, the gateway's bearer token,
and the request body limit."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import OWN_SUBCHANNELS
from tests.e2e.helpers import MODEL, poll_until_done, post, provider_env, scenes
from tests.fakes.openai_fake import FakeOpenAI, Ok
from tools.processes import System

pytestmark = pytest.mark.slow


def self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_grpc_services_can_require_tls(make_system: Callable[..., System], tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    system = make_system({"GRPC_TLS_CERT": str(cert), "GRPC_TLS_KEY": str(key), "GRPC_TLS_CA": str(cert)})
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        assert client.get("/readyz").json()["ready"] is True
        post(client, "tls", scenes(2))
        assert poll_until_done(client, "tls")[-1]["status"] == "assets_generated"
    address = f"127.0.0.1:{system.port('status')}"
    with grpc.secure_channel(
        address, grpc.ssl_channel_credentials(cert.read_bytes()), options=OWN_SUBCHANNELS
    ) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(address, options=OWN_SUBCHANNELS) as channel, pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)


def test_write_endpoint_needs_the_bearer_token_and_reads_do_not(make_system: Callable[..., System]) -> None:
    system = make_system({"GATEWAY_API_KEY": "token-for-tests-123"})
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic token-for-tests-123"}):
            answer = client.post(
                "/api/generate-preview-images", json={"videoId": "a", "scenes": scenes(1)}, headers=headers
            )
            assert answer.status_code == 401 and answer.json()["error"]["code"] == "UNAUTHENTICATED"
        ok = client.post(
            "/api/generate-preview-images",
            json={"videoId": "a", "scenes": scenes(1)},
            headers={"Authorization": "Bearer token-for-tests-123"},
        )
        assert ok.status_code == 202
        assert poll_until_done(client, "a")[-1]["status"] == "assets_generated"


APP = "http://app.example"  # the frontend's origin, listed in CORS_ORIGINS


def readable_by_the_app(answer: httpx.Response, *headers: str) -> None:
    """A browser on the app's origin may read this answer, and these headers of it."""
    assert answer.headers.get("access-control-allow-origin") == APP, dict(answer.headers)
    exposed = {h.strip().lower() for h in answer.headers.get("access-control-expose-headers", "").split(",")}
    assert {h.lower() for h in headers} <= exposed, exposed


def test_oversized_bodies_are_refused_with_413_declared_or_chunked(make_system: Callable[..., System]) -> None:
    system = make_system({"MAX_BODY_BYTES": "2048", "CORS_ORIGINS": APP})
    system.start_all()
    body = b'{"videoId": "big", "scenes": [{"prompt": "' + b"x" * 4000 + b'"}]}'
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        declared = client.post(
            "/api/generate-preview-images", content=body, headers={"content-type": "application/json", "Origin": APP}
        )
        assert declared.status_code == 413 and declared.json()["error"]["code"] == "RESOURCE_EXHAUSTED"
        readable_by_the_app(declared)  # the app can show why, not a bare network error
        chunked = client.post(
            "/api/generate-preview-images",
            content=iter([body[:1500], body[1500:]]),
            headers={"content-type": "application/json"},
        )
        assert chunked.status_code == 413
        missing = client.get("/api/video-status", params={"videoId": "big"})
        assert missing.status_code == 404  # nothing was started
        unknown = client.get("/no/such/route")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NOT_FOUND"


def test_a_full_waiting_line_is_a_429_the_app_can_read(
    make_system: Callable[..., System], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(MODEL, Ok(latency=2.0))
    env = provider_env(fake_openai.base_url, MAX_RUNNING_VIDEOS="1", MAX_WAITING_VIDEOS="0", CORS_ORIGINS=APP)
    system = make_system(env)
    system.start_all()
    with httpx.Client(base_url=system.gateway_url, timeout=10, headers={"Origin": APP}) as client:
        assert post(client, "running", scenes(1)).status_code == 202
        refused = post(client, "one-too-many", scenes(1))
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "RESOURCE_EXHAUSTED", refused.text
        assert int(refused.headers["retry-after"]) >= 1
        readable_by_the_app(refused, "Retry-After")
        assert client.get("/api/video-status", params={"videoId": "one-too-many"}).status_code == 404  # nothing kept
