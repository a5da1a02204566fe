"""Replicas of a gRPC service behind one address: the gateway's channel spreads calls over
them with round_robin, and keeps working when one goes away."""

from __future__ import annotations

import signal
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import rpcs, wait_until
from tests.e2e.helpers import poll_until_done, post, scenes
from tools.processes import System, free_port

pytestmark = pytest.mark.slow


def generate_calls(system: System, name: str) -> int:
    """GenerateStream calls (the gateway's) a replica handled, from its own metrics."""
    port = system.metrics_port("imagegen") if name == "imagegen" else int(system.env["IMAGEGEN_2_METRICS_PORT"])
    return int(rpcs(system, "imagegen", "GenerateStream", port))


def test_round_robin_spreads_scenes_over_two_imagegen_replicas(make_system: Callable[..., System]) -> None:
    second = free_port()
    system = make_system({"IMAGE_SIZE": "256x256"})
    first = system.port("imagegen")
    system.env["IMAGEGEN_ADDR"] = f"ipv4:127.0.0.1:{first},127.0.0.1:{second}"
    system.start_all()
    system.env["IMAGEGEN_2_METRICS_PORT"] = str(free_port())
    system.start_replica(
        "imagegen-2",
        "services.imagegen",
        {"IMAGEGEN_PORT": str(second), "IMAGEGEN_METRICS_PORT": system.env["IMAGEGEN_2_METRICS_PORT"]},
        port=second,
    )
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        # The gateway's channel picks up the replica that started after it once its
        # reconnect backoff ends: one-scene videos until the second replica has served.
        warm = iter(range(1000))

        def second_replica_serves() -> bool:
            video = f"warm-{next(warm)}"
            post(client, video, scenes(1))
            poll_until_done(client, video)
            return generate_calls(system, "imagegen-2") > 0

        assert wait_until(second_replica_serves, timeout=30, every=0.2)
        before = generate_calls(system, "imagegen"), generate_calls(system, "imagegen-2")
        post(client, "spread", scenes(8))
        assert poll_until_done(client, "spread")[-1]["status"] == "assets_generated"
        one = generate_calls(system, "imagegen") - before[0]
        two = generate_calls(system, "imagegen-2") - before[1]
        assert one + two == 8 and one >= 2 and two >= 2, (one, two)
        system.procs["imagegen-2"].send_signal(signal.SIGKILL)
        post(client, "one-left", scenes(4))
        final = poll_until_done(client, "one-left")[-1]
    assert final["status"] == "assets_generated" and len(final["images"]) == 4
    # Served by the replica still up, not by the gateway's own fallback placeholder.
    assert {i["provider"] for i in final["images"]} == {"placeholder"}
