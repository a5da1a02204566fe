"""Shared test helpers: real gRPC servers on loopback ports, the whole system as real
processes, and bounded waiting on conditions (never sleeps)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from services.common.channels import CHANNEL_OPTIONS
from services.common.server import Registration, RunningServer, start_server
from tests.ci import IN_CI
from tests.fakes import openai_fake as fo
from tests.pg import pg_dsn
from tests.redis_server import own_redis, redis_prefix
from tools.processes import SERVICES, System, free_port

# Test channels keep their own subchannels (see grpc_server).
OWN_SUBCHANNELS = [("grpc.use_local_subchannel_pool", 1)]


@asynccontextmanager
async def grpc_server(*registrations: Registration) -> AsyncIterator[tuple[RunningServer, grpc.aio.Channel]]:
    """A real grpc.aio server on an ephemeral loopback port, and a channel to it."""
    running = await start_server("127.0.0.1", 0, list(registrations))
    # A channel of its own subchannels: gRPC otherwise shares them process-wide, and a test
    # whose server got the ephemeral port of an earlier, stopped one would inherit that
    # subchannel's connect backoff and fail fast with UNAVAILABLE.
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=[*CHANNEL_OPTIONS, *OWN_SUBCHANNELS])
    try:
        yield running, channel
    finally:
        await channel.close()
        await running.server.stop(0)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0, every: float = 0.02) -> bool:
    """Poll an async condition until it holds or the bound passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(every)
    return await check()


def wait_until(check: Callable[[], bool], timeout: float = 10.0, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return check()


@pytest.fixture
def make_system(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., System]:
    """Build the four-process system on free ports with its own data directory. Each system
    is stopped as soon as its test ends, before any fixture is torn down (a finalizer added
    to the test while it runs comes first), whatever order the test asks for them in: its
    database is not dropped, nor its fake provider stopped, under it (a queue worker whose
    database was dropped used its whole grace)."""

    def build(env: dict[str, str] | None = None) -> System:
        ports = {name: free_port() for name in SERVICES}
        overrides = {
            "DATA_DIR": str(tmp_path / "data"),
            "OPENAI_API_KEY": "",
            "SHUTDOWN_GRACE": "10",
            "LOG_LEVEL": "INFO",
            **(env or {}),
        }
        system = System.configure(overrides, ports, log_dir=tmp_path / "logs")
        request.node.addfinalizer(lambda: system.stop_all(grace=10))
        return system

    return build


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus series (samples whose labels include ``labels``) at a
    /metrics URL: how tests count what a service did, from the service's own figures."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def rpcs(system: System, service: str, method: str, port: int | None = None) -> float:
    """Calls of a gRPC method a service handled, from its own metrics (any status code)."""
    url = f"http://127.0.0.1:{port or system.metrics_port(service)}/metrics"
    return metric(url, "storyshort_grpc_server_handled_total", method=method)


def logs_of(system: System, name: str) -> str:
    assert system.log_dir is not None
    path = system.log_dir / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


# The one PostgreSQL fixture (tests/pg.py): a database of its own per test.
__all__ = ["IN_CI", "own_redis", "pg_dsn", "redis_prefix"]

# What the fake provider lists, and the keys the tests use (imagegen's and the system's).
PROVIDER_MODELS = ("gpt-image-2.5-sunburst", "gpt-image-2", "gpt-image-2.6-flare", "dall-e-3", "dall-e-2")
CHAIN_KEY = "sk-test-chain-0123456789"
SYSTEM_KEY = "sk-test-e2e-0123456789abcdef"


@pytest.fixture
def fake_openai() -> Iterator[fo.FakeOpenAI]:
    """The one fake provider: the OpenAI images API on a loopback port, listing the models the
    tests use and refusing any key but theirs."""
    with fo.FakeOpenAI(models=[fo.model_entry(m) for m in PROVIDER_MODELS], api_key={CHAIN_KEY, SYSTEM_KEY}) as fake:
        yield fake
