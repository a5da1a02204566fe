"""Redis for tests: the machine's server on 127.0.0.1:6379, each test under a key prefix of
its own (deleted afterwards), or a server the test owns on a port of its own (to stop and
start it). With CI=true a missing server fails the test (never skips)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis

from tests.ci import IN_CI
from tools.processes import free_port, wait_for_port

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(f"{reason}; CI runs these")


@dataclass
class Prefix:
    url: str
    name: str
    client: redis.Redis

    def matching(self, pattern: str = "*") -> list[bytes]:
        return list(self.client.scan_iter(f"{self.name}:{pattern}"))


@pytest.fixture
def redis_prefix() -> Iterator[Prefix]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=3)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        _unavailable(f"Redis is not reachable at {REDIS_URL} ({exc})")
    prefix = Prefix(REDIS_URL, f"test-{uuid.uuid4().hex[:12]}", client)
    try:
        yield prefix
    finally:
        for key in prefix.matching():
            client.delete(key)
        client.close()


@dataclass
class OwnRedis:
    """A redis-server of the test's own (no persistence), stopped and started at will."""

    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            _unavailable("no redis-server binary")
            return
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port, 10, self.proc)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a hung Redis)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen one too
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    server.start()
    try:
        yield server
    finally:
        server.kill()
