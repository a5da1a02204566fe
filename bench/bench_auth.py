"""Status reads with signed-in users: reads/s through a gateway that verifies each request's
Supabase access token (AUTH_REQUIRED, keys from a local JWKS endpoint) against a second
gateway replica without auth, on the same services and the same video, alternating rounds
in one run. The goal compares like with like: the same request bytes (the replica without
auth is sent the same token, and ignores it), so the ratio is what verification costs;
verification is cached per token, so it should stay near 1. Reads without the header at all
are reported beside it: the ~900-byte JWT header's own cost on the wire and in parsing."""

from __future__ import annotations

import time

import httpx

from bench.bench_status import throughput
from bench.common import Figure, median, running_system
from tests.fakes.jwks_fake import FakeAuth
from tools.processes import free_port

USER = "be0c0000-0000-4000-8000-00000000be0c"


def auth_reads(quick: bool) -> list[Figure]:
    seconds, rounds = (3.0, 2) if quick else (5.0, 3)
    with FakeAuth() as auth:
        env = {"AUTH_REQUIRED": "true", "AUTH_JWKS_URL": auth.jwks_url, "AUTH_ISSUER": auth.issuer}
        token = auth.token(USER)
        headers = {"Authorization": f"Bearer {token}"}
        with running_system(env) as system:
            plain_port = free_port()
            system.start_replica(
                "gateway-plain", "gateway", {"GATEWAY_PORT": str(plain_port), "AUTH_REQUIRED": "false"}, port=plain_port
            )
            signed, plain = system.gateway_url, f"http://127.0.0.1:{plain_port}"
            with httpx.Client(base_url=signed, timeout=30, headers=headers) as client:
                posted = client.post(
                    "/api/generate-preview-images", json={"videoId": "read", "scenes": [{"prompt": "a"}] * 10}
                )
                assert posted.status_code == 202, posted.text
                deadline = time.monotonic() + 120
                while (
                    client.get("/api/video-status", params={"videoId": "read"}).json()["status"] != "assets_generated"
                ):
                    assert time.monotonic() < deadline, "the video did not finish"
                    time.sleep(0.05)
            throughput(signed, "read", 1.0, headers=headers)  # warm-up: the token is verified once here
            throughput(plain, "read", 1.0)
            with_auth: list[float] = []
            without: list[float] = []
            bare: list[float] = []
            for _ in range(rounds):
                with_auth.append(throughput(signed, "read", seconds, headers=headers))
                without.append(throughput(plain, "read", seconds, headers=headers))
                bare.append(throughput(plain, "read", seconds))
            fetches = auth.fetches
    ratio = median(with_auth) / median(without)
    return [
        Figure("status reads/s, token verified (AUTH_REQUIRED)", round(median(with_auth), 1), "reads/s"),
        Figure("status reads/s, same bytes, no auth (another replica)", round(median(without), 1), "reads/s"),
        Figure("status reads/s, no auth and no header", round(median(bare), 1), "reads/s"),
        Figure(
            "status reads with auth / without, same request bytes, same run",
            round(ratio, 3),
            "x",
            ">= 0.90",
            ratio >= 0.90,
            note=f"medians of {rounds} alternating rounds of {seconds:g} s; JWKS fetched {fetches}x",
        ),
        Figure("status reads with auth / no header at all", round(median(with_auth) / median(bare), 3), "x"),
    ]
