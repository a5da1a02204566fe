"""One provider's concurrency limit shared by the imagegen replicas through Redis (the
shared state's connection, health and replicas are in shared.py)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from redis.asyncio import Redis

log = logging.getLogger(__name__)
T = TypeVar("T")

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
# Longer leases for the slots this replica still holds (ARGV[2..]); with 'XX' only those
# still there (a slot given back meanwhile stays gone).
RENEW = """
local t = redis.call('TIME')
local lease_end = t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', lease_end, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1
"""
# The slots this replica took alone while Redis was down, registered when it is back.
REGISTER = RENEW.replace("'XX', ", "")


class Shared(Protocol):
    """What a limit uses of the shared state (services/imagegen/shared.py: SharedState)."""

    redis: Redis
    up: bool
    lease: float
    replica: str

    @property
    def settling(self) -> bool: ...  # Redis answers, yet this replica keeps to its part

    def key(self, *parts: str) -> str: ...

    def script(self, name: str, source: str) -> Any: ...

    def part(self, size: int) -> int: ...

    def spawn(self, work: Awaitable[Any]) -> None: ...

    async def call(
        self, op: str, work: Callable[[], Awaitable[T]], late: Callable[[T], None] | None = None
    ) -> T | None: ...


class SharedLimit:
    """One provider's concurrency limit across every replica: a slot is a lease in Redis,
    renewed while its request runs, gone by itself when its replica dies. While the shared
    state is down, this replica uses its part of the limit (SharedState.part), counting the
    shared slots it still holds (so the switch itself never lets more through); the slots it
    takes alone are registered in Redis when it is back, and it keeps to its part (taking its
    slots from Redis too) until the others have registered theirs (SharedState.settling).

    Used where an asyncio.Semaphore was (acquire, then release when the request ends);
    acquire answers False when this replica has no part of the limit while Redis is down."""

    POLL = 0.2  # a waiter looks again this often even without a wake-up (expired leases)

    def __init__(self, shared: Shared, name: str, size: int) -> None:
        self.shared = shared
        self.name = name
        self.size = size
        self._key = shared.key("slots", name)
        self._held: list[str] = []  # this replica's slots (shared, or taken alone while down)
        self._orphans: list[str] = []  # given back while down: removed from Redis on return
        self._tokens = itertools.count()
        self._freed = asyncio.Condition()
        self._room = asyncio.Condition()  # alone: room while fewer than this replica's part held
        self._wakes = 0
        self._asking = 0  # acquires out to Redis now

    @property
    def _taken(self) -> int:
        """Slots held, and those being asked for (each may be granted)."""
        return len(self._held) + self._asking

    @property
    def local_size(self) -> int:
        return self.shared.part(self.size)

    def _token(self) -> str:
        return f"{self.shared.replica}:{next(self._tokens)}"

    async def acquire(self) -> bool:
        acquire = self.shared.script("acquire", ACQUIRE)
        lease_ms = int(self.shared.lease * 1000)
        while True:
            if self.shared.settling and self._taken >= self.local_size:
                # Redis is back, but a replica may still hold slots it took alone that Redis
                # does not count yet (shared_roll.py): this replica keeps to its part meanwhile.
                if self.local_size == 0:
                    return False
                async with self._room:
                    await self._room.wait_for(lambda: not self.shared.settling or self._taken < self.local_size)
                continue
            if self.shared.up:
                token, seen = self._token(), self._wakes
                self._asking += 1
                try:
                    got = await self.shared.call(
                        "acquire",
                        functools.partial(acquire, keys=[self._key], args=[self.size, lease_ms, token]),
                        late=functools.partial(self._granted_late, token),
                    )
                finally:
                    self._asking -= 1
                    if self.shared.settling:  # a place this ask kept from the others' count
                        self.shared.spawn(self._make_room())
                if got == 1:
                    self._held.append(token)
                    return True
                if got is None and not self.shared.up:
                    continue  # down: decide alone
                if self._wakes == seen:  # no slot freed meanwhile (or a late answer): wait, then ask again
                    async with self._freed:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._freed.wait(), self.POLL)
                continue
            if self.local_size == 0:
                return False
            async with self._room:
                await self._room.wait_for(lambda: self.shared.up or len(self._held) < self.local_size)
                if not self.shared.up:
                    self._held.append(self._token())
                    return True

    def _granted_late(self, token: str, got: object) -> None:
        """A slot granted after its request stopped waiting: nobody holds it."""
        if got == 1:
            self.shared.spawn(self._give(token))

    def release(self) -> None:
        token = self._held.pop()
        self.shared.spawn(self._make_room())
        if self.shared.up:
            self.shared.spawn(self._give(token))
            self.wake()
        else:
            self._orphans.append(token)

    async def _make_room(self) -> None:
        async with self._room:
            self._room.notify(1)

    def state_changed(self) -> None:
        """The shared state went down or came back, or this replica began or stopped keeping
        to its part while Redis answers: every waiter looks again."""

        async def notify() -> None:
            async with self._room:
                self._room.notify_all()
            async with self._freed:
                self._freed.notify_all()

        self.shared.spawn(notify())

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

        self.shared.spawn(notify())

    async def renew(self, direct: bool = False) -> None:
        """Longer leases for the slots held; ``direct`` (coming back from an outage): the
        slots taken alone are added and those given back meanwhile removed, before any
        request shares the limit again."""
        renew = self.shared.script("renew", RENEW)
        lease_ms = int(self.shared.lease * 1000)
        tokens = list(self._held)
        if direct:
            if tokens:
                await self.shared.script("register", REGISTER)(keys=[self._key], args=[lease_ms, *tokens])
            orphans, self._orphans = self._orphans, []
            if orphans:
                await self.shared.redis.zrem(self._key, *orphans)
        elif tokens:
            await self.shared.call("renew", lambda: renew(keys=[self._key], args=[lease_ms, *tokens]))

    async def give_back(self) -> None:
        """At shutdown: this replica's slots go back now, not at the end of their lease."""
        tokens = list(self._held)
        if tokens:
            await self.shared.call("release", lambda: self.shared.redis.zrem(self._key, *tokens))
