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
from tests.e2e.helpers import poll_until_done, post, scenes
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


def test_oversized_bodies_are_refused_with_413_declared_or_chunked(make_system: Callable[..., System]) -> None:
    system = make_system({"MAX_BODY_BYTES": "2048"})
    system.start_all()
    body = b'{"videoId": "big", "scenes": [{"prompt": "' + b"x" * 4000 + b'"}]}'
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        declared = client.post(
            "/api/generate-preview-images", content=body, headers={"content-type": "application/json"}
        )
        assert declared.status_code == 413 and declared.json()["error"]["code"] == "RESOURCE_EXHAUSTED"
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
