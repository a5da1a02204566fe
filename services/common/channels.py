"""Client channels with the same message limits as the servers."""

from __future__ import annotations

import json
from pathlib import Path

import grpc

from services.common.config import GRPC_MAX_MESSAGE_BYTES

# Replicas behind one address: a DNS name with several addresses (a Kubernetes headless
# Service) or a list ("ipv4:10.0.0.1:50051,10.0.0.2:50051") is spread with round_robin.
# Generate (and GenerateStream, before its first message) is retried once on UNAVAILABLE:
# imagegen never answers that itself (it always has the placeholder), so it means a replica
# went away and another can serve. Storage and status answer UNAVAILABLE after their own
# retries, so theirs are not retried here.
SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [
                    {"service": "storyshort.imagegen.v1.ImageGenService", "method": "Generate"},
                    {"service": "storyshort.imagegen.v1.ImageGenService", "method": "GenerateStream"},
                ],
                "retryPolicy": {
                    "maxAttempts": 2,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)
CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.service_config", SERVICE_CONFIG),
    # Re-resolve DNS soon after a replica goes away, so new pods are found.
    ("grpc.dns_min_time_between_resolutions_ms", 5_000),
    # A restarted service is connected again within 2 s (gRPC's default backoff grows to
    # 120 s, leaving calls failing long after the service is back).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


def open_channel(address: str, tls_ca: Path | None = None) -> grpc.aio.Channel:
    """A channel to one service; TLS when a CA to trust is given (GRPC_TLS_CA)."""
    if tls_ca is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=tls_ca.read_bytes())
        return grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
