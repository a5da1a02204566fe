"""Prometheus metrics shared by every service, and the scrape endpoint."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram, start_http_server

log = logging.getLogger(__name__)

RPC_HANDLED = Counter(
    "storyshort_grpc_server_handled_total",
    "gRPC calls handled, by service, method and status code",
    ["service", "method", "code"],
)
RPC_SECONDS = Histogram(
    "storyshort_grpc_server_handling_seconds",
    "Time to handle a gRPC call",
    ["service", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)


def serve_metrics(port: int, host: str) -> None:
    """Expose /metrics on its own port (0 = off)."""
    if port:
        try:
            start_http_server(port, addr=host)
        except OSError as exc:
            # Metrics are for operators; a taken port must not stop the service itself.
            log.error("cannot serve metrics; set another *_METRICS_PORT", extra={"port": port, "error": str(exc)})
            return
        log.info("metrics listening", extra={"address": f"http://{host}:{port}/metrics"})
