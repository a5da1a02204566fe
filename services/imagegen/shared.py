"""What imagegen replicas share through Redis (IMAGEGEN_SHARED_STATE): each provider's
concurrency limit, its breaker, and the images already paid for.

Redis trouble never fails a request. Every Redis call has a short deadline
(IMAGEGEN_SHARED_TIMEOUT); the first one that fails or is late marks the shared state down,
once, in the log, a metric and the health service, and from then on each replica uses its
own limits (IMAGEGEN_SHARED_LOCAL_SHARE of each shared one) and its own breakers, which
mirror the shared ones while Redis answers. A background ping brings it back.

Atomic steps run as server-side scripts with Redis's own clock (replicas' clocks differ)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from services.imagegen import metrics

log = logging.getLogger(__name__)
T = TypeVar("T")
# How often a down shared state is tried again.
PING_EVERY = 1.0

# A slot: expired holders (a replica that died) are dropped first, then one is taken if
# fewer than the limit are held. KEYS[1] the holders (token -> lease end, ms).
ACQUIRE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
  return 1
end
return 0
"""
# Longer leases for the slots this replica still holds (ARGV[2..]).
RENEW = """
local t = redis.call('TIME')
local lease_end = t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', lease_end, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1
"""


class SharedState:
    """The connection, its health, and the wake-ups of slots freed by other replicas."""

    def __init__(self, url: str, prefix: str, *, timeout: float, lease: float, local_share: float) -> None:
        self.redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        self.prefix = prefix.rstrip(":")
        self.timeout = timeout
        self.lease = lease
        self.local_share = local_share
        self.up = False
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.on_change: Callable[[bool], None] = lambda _up: None
        self._scripts: dict[str, Any] = {}
        self._limits: dict[str, SharedLimit] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._watching = False
        metrics.SHARED_UP.set(0)

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def script(self, name: str, source: str) -> Any:
        if name not in self._scripts:
            self._scripts[name] = self.redis.register_script(source)
        return self._scripts[name]

    async def start(self) -> None:
        """Connect (a Redis that does not answer now is tried again in the background)."""
        self.up = True  # so that a failed first ping is a change: logged, and watched for
        if await self.call("ping", self.redis.ping) is not None:
            metrics.SHARED_UP.set(1)
            self._spawn(self._listen())
        self._spawn(self._renew_leases())

    async def call(self, op: str, work: Callable[[], Awaitable[T]]) -> T | None:
        """``work`` against Redis within the deadline; None (and the state marked down)
        when Redis fails or is late. Nothing is sent while the state is down."""
        if not self.up and op != "ping":
            return None
        try:
            async with asyncio.timeout(self.timeout):
                return await work()
        except (RedisError, OSError, TimeoutError) as exc:
            metrics.SHARED_ERRORS.labels(op).inc()
            self._mark(False, f"{type(exc).__name__}: {exc}"[:200])
            return None

    def _mark(self, up: bool, error: str = "") -> None:
        if up == self.up:
            return
        self.up = up
        metrics.SHARED_UP.set(1 if up else 0)
        self.on_change(up)
        if up:
            log.info("shared state reachable: limits, breakers and paid images are shared again")
            self._spawn(self._listen())
        else:
            log.error(
                "shared state unavailable: each replica uses its own limits and breakers until it is back",
                extra={"error": error, "local_share": self.local_share},
            )
            if not self._watching:
                self._spawn(self._watch())

    async def _watch(self) -> None:
        self._watching = True
        try:
            while not self.up:
                await asyncio.sleep(PING_EVERY)
                # Connections from before the outage are dead (a restarted Redis closed
                # them): drop them all, so the first call after the ping does not fail.
                with contextlib.suppress(RedisError, OSError):
                    await self.redis.connection_pool.disconnect()
                if await self.call("ping", self.redis.ping) is not None:
                    self._mark(True)
        finally:
            self._watching = False

    async def _listen(self) -> None:
        """Slots freed anywhere wake this replica's waiters at once (they poll too)."""
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.key("freed"))
            while self.up:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    limit = self._limits.get(message["data"].decode())
                    if limit is not None:
                        limit.wake()
        except (RedisError, OSError) as exc:
            self._mark(False, f"{type(exc).__name__}: {exc}"[:200])
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            for limit in self._limits.values():
                await limit.renew()

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def limit(self, name: str, size: int) -> SharedLimit:
        self._limits[name] = SharedLimit(self, name, size)
        return self._limits[name]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for limit in self._limits.values():
            await limit.give_back()
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()


class SharedLimit:
    """One provider's concurrency limit across every replica: a slot is a lease in Redis,
    renewed while its request runs, gone by itself when its replica dies. While the shared
    state is down, this replica allows ``local_share`` of the limit, counting the shared
    slots it still holds (so the switch itself never lets more through).

    Used where an asyncio.Semaphore was (acquire, then release when the request ends)."""

    POLL = 0.2  # a waiter looks again this often even without a wake-up (expired leases)

    def __init__(self, shared: SharedState, name: str, size: int) -> None:
        self.shared = shared
        self.name = name
        self.size = size
        self.local_size = max(1, math.floor(size * shared.local_share))
        self._key = shared.key("slots", name)
        self._held: list[str | None] = []  # this replica's slots: a token, or None (local)
        self._tokens = itertools.count()
        self._freed = asyncio.Condition()
        self._room = asyncio.Condition()  # local mode: room while fewer than local_size held
        self._wakes = 0

    async def acquire(self) -> bool:
        acquire = self.shared.script("acquire", ACQUIRE)
        lease_ms = int(self.shared.lease * 1000)
        while self.shared.up:
            args = [self.size, lease_ms, f"{self.shared.replica}:{next(self._tokens)}"]
            seen = self._wakes
            got = await self.shared.call("acquire", functools.partial(acquire, keys=[self._key], args=args))
            if got is None:
                break  # the shared state just went down: the local limit decides
            if got == 1:
                self._held.append(str(args[2]))
                return True
            if self._wakes == seen:  # no slot freed meanwhile: wait for one
                async with self._freed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._freed.wait(), self.POLL)
        async with self._room:
            await self._room.wait_for(lambda: len(self._held) < self.local_size)
            self._held.append(None)
        return True

    def release(self) -> None:
        token = self._held.pop()
        self.shared._spawn(self._make_room())
        if token is not None:
            self.shared._spawn(self._give(token))
            self.wake()

    async def _make_room(self) -> None:
        async with self._room:
            self._room.notify(1)

    async def _give(self, token: str) -> None:
        async def give() -> None:
            async with self.shared.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(self._key, token)
                pipe.publish(self.shared.key("freed"), self.name)
                await pipe.execute()

        await self.shared.call("release", give)

    def wake(self) -> None:
        self._wakes += 1

        async def notify() -> None:
            async with self._freed:
                self._freed.notify(1)

        self.shared._spawn(notify())

    async def renew(self) -> None:
        tokens = [t for t in self._held if t is not None]
        if tokens:
            renew = self.shared.script("renew", RENEW)
            lease_ms = int(self.shared.lease * 1000)
            await self.shared.call("renew", lambda: renew(keys=[self._key], args=[lease_ms, *tokens]))

    async def give_back(self) -> None:
        """At shutdown: this replica's slots go back now, not at the end of their lease."""
        tokens = [t for t in self._held if t is not None]
        if tokens:
            await self.shared.call("release", lambda: self.shared.redis.zrem(self._key, *tokens))
