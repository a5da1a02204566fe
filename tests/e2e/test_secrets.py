"""A whole video with known fake keys, through faults that make clients quote them: no log
line, error message, HTTP answer or metric may contain any of them."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import httpx
import pytest

from storyshort.imagegen.v1 import imagegen_pb2, imagegen_pb2_grpc
from tests.conftest import OWN_SUBCHANNELS, logs_of
from tests.e2e.helpers import MODEL, poll_until_done, post, scenes
from tests.fakes import openai_fake as fo
from tests.fakes import supabase_fake as sf
from tools.processes import SERVICES, System, free_port

pytestmark = pytest.mark.slow
OPENAI_KEY = "sk-secret-openai-7f3a9c1e5b"
SUPABASE_KEY = "secret-service-role-4d8e2b6a1f"
GATEWAY_KEY = "secret-gateway-token-9c5e1a3b"
SECRETS = (OPENAI_KEY, SUPABASE_KEY, GATEWAY_KEY)


def test_no_secret_reaches_logs_errors_answers_or_metrics(make_system: Callable[..., System]) -> None:
    with fo.FakeOpenAI(models=[fo.model_entry(MODEL)]) as openai, sf.FakeSupabase(key=SUPABASE_KEY) as supabase:
        openai.script(MODEL, fo.BAD_KEY)  # quotes the key back in its error message
        supabase.inject("upload", sf.Fail(500), sf.Pass())
        metrics_ports = {name: free_port() for name in ("imagegen", "storage", "status")}
        system = make_system(
            {
                "OPENAI_API_KEY": OPENAI_KEY,
                "OPENAI_BASE_URL": openai.base_url,
                "IMAGEGEN_CHAIN": MODEL,
                "STORAGE_BACKEND": "supabase",
                "STATUS_STORE": "supabase",
                "SUPABASE_URL": supabase.url,
                "SUPABASE_SERVICE_ROLE_KEY": SUPABASE_KEY,
                "GATEWAY_API_KEY": GATEWAY_KEY,
                "LOG_LEVEL": "DEBUG",
                **{f"{name.upper()}_METRICS_PORT": str(port) for name, port in metrics_ports.items()},
            }
        )
        system.start("status")  # Supabase tables: our fake has them; a real one runs `make migrate`
        for name in ("storage", "imagegen", "gateway"):
            system.start(name)
        answers: list[str] = []
        with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
            refused = post(client, "s1", scenes(3))
            answers.append(refused.text)
            assert refused.status_code == 401
            wrong = client.post(
                "/api/generate-preview-images",
                json={"videoId": "s1", "scenes": scenes(3)},
                headers={"Authorization": f"Bearer {GATEWAY_KEY}x"},
            )
            answers.append(wrong.text)
            assert wrong.status_code == 401
            client.headers["Authorization"] = f"Bearer {GATEWAY_KEY}"
            assert post(client, "s1", scenes(3)).status_code == 202
            final = poll_until_done(client, "s1")[-1]
            answers.append(str(final))
            assert final["status"] == "assets_generated"
            # The key error really happened (on failure, the logs of the two processes say why).
            assert final["summary"]["hardProviderFailures"] >= 1, (
                final,
                [line for name in ("gateway", "imagegen") for line in logs_of(system, name).splitlines()[-40:]],
            )
            for path in ("/metrics", "/readyz", "/openapi.json", "/api/video-status?videoId=s1", "/videos/s1"):
                answers.append(client.get(path).text)
        for port in metrics_ports.values():
            answers.append(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
        with grpc.insecure_channel(f"127.0.0.1:{system.port('imagegen')}", options=OWN_SUBCHANNELS) as channel:
            providers = imagegen_pb2_grpc.ImageGenServiceStub(channel).ListProviders(
                imagegen_pb2.ListProvidersRequest(), timeout=5
            )
            answers.append(str(providers))
        system.stop_all()
        logs = {name: logs_of(system, name) for name in SERVICES}
    assert all(logs.values()), "every process wrote logs"
    assert "provider disabled" in logs["imagegen"]  # the hard failure was logged, in words
    for secret in SECRETS:
        for name, text in logs.items():
            assert secret not in text, f"{name} logged a secret"
        for text in answers:
            assert secret not in text, "an answer contained a secret"


def test_no_user_token_or_jwt_secret_reaches_logs_answers_or_metrics(make_system: Callable[..., System]) -> None:
    """Users on, with the legacy HS256 secret: tokens sent in the header and in
    `access_token` (the event stream, the page), valid, expired and forged, at DEBUG."""
    from tests.fakes.jwks_fake import LEGACY_SECRET, FakeAuth

    with FakeAuth() as auth:
        system = make_system(
            {
                "AUTH_REQUIRED": "true",
                "AUTH_JWKS_URL": auth.jwks_url,
                "AUTH_ISSUER": auth.issuer,
                "SUPABASE_JWT_SECRET": LEGACY_SECRET,
                "GATEWAY_API_KEY": GATEWAY_KEY,
                "LOG_LEVEL": "DEBUG",
            }
        )
        system.start_all()
        user = "5ec12e75-0000-4000-8000-00000000000a"
        tokens = [
            auth.token(user),
            auth.legacy_token(user),
            auth.token(user, expires_in=-60),
            auth.legacy_token(user, secret="forged-secret-0123456789abcdef0123"),
        ]
        answers: list[str] = []
        with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
            for token in tokens:
                headers = {"Authorization": f"Bearer {token}"}
                answers.append(post(client, "t1", scenes(1)).text)
                answers.append(
                    client.post(
                        "/api/generate-preview-images", json={"videoId": "t1", "scenes": scenes(1)}, headers=headers
                    ).text
                )
                answers.append(client.get("/api/video-status", params={"videoId": "t1"}, headers=headers).text)
                answers.append(client.get("/api/videos/t1/events", params={"access_token": token}).text)
                answers.append(client.get("/videos/t1", params={"access_token": token}).text)
            answers.append(client.get("/metrics").text)
        system.stop_all()
        logs = {name: logs_of(system, name) for name in SERVICES}
    assert "UNAUTHENTICATED" in "".join(answers)  # the bad tokens really were refused
    for secret in [*tokens, LEGACY_SECRET, GATEWAY_KEY]:
        for name, text in logs.items():
            assert secret not in text, f"{name} logged a token or secret"
        for text in answers:
            assert secret not in text, "an answer contained a token or secret"
