"""What imagegen replicas share through Redis (IMAGEGEN_SHARED_STATE): each provider's
concurrency limit, its breaker, and the images already paid for.

Redis trouble never fails a request, and a slow answer is not taken for a dead Redis.
A request waits IMAGEGEN_SHARED_TIMEOUT for each Redis call; a late answer only means this
request goes on without it (an acquire asks again; a slot granted late is given back), and
a ping outside the request path is sent at once. What marks the shared state down is what
actually failed: a refused or reset connection, or IMAGEGEN_SHARED_PING_TIMEOUT passing
twice in a row without an answer to that ping (a frozen or unreachable Redis). Down is said
once, in the log, a metric and the health service; each replica then takes its part of
every shared limit (the limit split among the replicas that were alive when it last saw
Redis, so the parts add up to the limit) and uses its own breakers, which mirror the
shared ones while Redis answers. The ping brings it back: the slots taken meanwhile are
registered in Redis before this replica takes a shared slot again, and it keeps to its part
until every replica it counts has said it shares again (shared_roll.py: the one back first
must not count without the others' alone slots).

Atomic steps run as server-side scripts with Redis's own clock (replicas' clocks differ).
The connection, its health (up, down, back) and the heartbeat stay in this one module,
about 340 lines, because each decides the others; a limit's slots are in shared_limit.py,
and what the heartbeats say of the replicas in shared_roll.py."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.imagegen import metrics
from services.imagegen.shared_limit import SharedLimit
from services.imagegen.shared_roll import HEARTBEAT, Roll

log = logging.getLogger(__name__)
T = TypeVar("T")
# How often the ping outside the request path checks Redis (sooner after a late answer).
PING_EVERY = 1.0
# Pings in a row without an answer within the ping timeout that mark the state down.
PINGS_MISSED = 2
# Commands still running after their request stopped waiting; beyond this many a request
# does not send more (Redis is behind) and goes on as if the answer were late.
MAX_LATE = 48


def part_of(size: int, replicas: list[str], me: str) -> int:
    """This replica's part of a limit of ``size`` split among ``replicas`` (sorted, all
    alike): the parts add up to ``size``; with fewer places than replicas, the first
    ``size`` replicas get one each and the others none."""
    count, rank = len(replicas), replicas.index(me)
    return size // count + (1 if rank < size % count else 0)


class SharedState:
    """The connection, its health, the replicas alive, and the wake-ups of slots freed by
    other replicas."""

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        timeout: float,
        lease: float,
        local_share: float,
        ping_timeout: float = 1.0,
    ) -> None:
        # A command the request stopped waiting for may still finish (up to the ping timeout).
        self.redis = aioredis.Redis.from_url(
            url,
            socket_timeout=max(ping_timeout, timeout),
            socket_connect_timeout=max(ping_timeout, timeout),
            retry=Retry(NoBackoff(), 0),
        )
        # Pings go on a connection of their own: a busy request pool never delays them.
        self._pinger = aioredis.Redis.from_url(
            url,
            socket_timeout=ping_timeout,
            socket_connect_timeout=ping_timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._beat = self._pinger.register_script(HEARTBEAT)
        self.prefix = prefix.rstrip(":")
        self.timeout = timeout
        self.ping_timeout = ping_timeout
        self.lease = lease
        self.local_share = local_share
        self.up = False
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        # Who is alive and who shares, from the heartbeats (shared_roll.py).
        self.roll = Roll(self.replica, lease)
        self.outages = 0  # outages this replica has seen: its words carry the count
        self.on_change: Callable[[bool], None] = lambda _up: None
        self._scripts: dict[str, Any] = {}
        self._limits: dict[str, SharedLimit] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._check = asyncio.Event()  # a late answer asks the ping to look now
        self._late: set[asyncio.Future[Any]] = set()  # commands answered after their request left
        self._now = 0  # Redis's time at the last heartbeat answered (ms)
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
        answered = await self._ping()
        if answered is True:
            metrics.SHARED_UP.set(1)
            self.roll.came_back(self._now)
            self._limits_look_again()
            self.spawn(self._listen())
        else:
            self._mark(False, answered or "no answer to the first ping")
        self.spawn(self._watch())
        self.spawn(self._renew_leases())

    async def call(
        self, op: str, work: Callable[[], Awaitable[T]], late: Callable[[T], None] | None = None
    ) -> T | None:
        """``work`` against Redis; None when Redis fails or is late (the state says which:
        a failed connection marks it down, a late answer only asks the ping to look).
        ``late`` gets an answer that comes after the caller stopped waiting for it. Nothing
        is sent while the state is down."""
        if not self.up:
            return None
        if len(self._late) >= MAX_LATE:  # Redis is behind: no more until it catches up
            metrics.SHARED_LATE.labels(op).inc()
            self._check.set()
            return None
        task = asyncio.ensure_future(work())
        try:
            done, _ = await asyncio.wait({task}, timeout=self.timeout)
        except asyncio.CancelledError:
            self._wait_late(task, late)
            raise
        if not done:
            metrics.SHARED_LATE.labels(op).inc()
            self._wait_late(task, late)
            self._check.set()
            return None
        try:
            return task.result()
        except MaxConnectionsError:  # commands pile up behind a slow Redis: not a verdict
            metrics.SHARED_LATE.labels(op).inc()
            self._check.set()
            return None
        except (RedisConnectionError, ConnectionError) as exc:
            metrics.SHARED_ERRORS.labels(op).inc()
            self._mark(False, f"{type(exc).__name__}: {exc}"[:200])
        except (RedisError, OSError) as exc:  # a timeout inside the client, a server error
            metrics.SHARED_ERRORS.labels(op).inc()
            log.info("a shared-state call failed; the ping decides", extra={"op": op, "error": repr(exc)[:200]})
            self._check.set()
        except Exception as exc:  # the client failing its own way is Redis trouble too
            # Seen: an AttributeError from redis-py when a connection it was opening was
            # closed under it. Redis trouble never fails a request: it goes on without it.
            metrics.SHARED_ERRORS.labels(op).inc()
            log.warning("the Redis client failed; the ping decides", extra={"op": op, "error": repr(exc)[:200]})
            self._check.set()
        return None

    def _wait_late(self, task: asyncio.Future[T], late: Callable[[T], None] | None) -> None:
        """A command the request stopped waiting for runs on (within the client's socket
        timeout); its answer goes to ``late``."""
        self._late.add(task)
        task.add_done_callback(self._late.discard)
        task.add_done_callback(functools.partial(_settle, late=late))

    async def _ping(self) -> bool | str:
        """True when Redis answered in time; else what failed ("" for no answer in time,
        which alone is not a verdict). The ping is this replica's heartbeat: it says whether
        this replica shares, and its answer names the replicas alive and what they said."""
        try:
            async with asyncio.timeout(self.ping_timeout):
                now, alive, words = await self._beat(
                    keys=[self.key("replicas"), self.key("words")],
                    args=[int(self.lease * 1000), self.replica, self.outages, 1 if self.up else 0],
                )
        except (TimeoutError, RedisTimeoutError, MaxConnectionsError):
            return ""
        except Exception as exc:  # RedisError, OSError, or the client failing its own way (see call)
            return f"{type(exc).__name__}: {exc}"[:200] or type(exc).__name__
        self._now = int(now)
        settling = self.settling
        self.roll.heard(self._now, alive, words, up=self.up)
        metrics.SHARED_REPLICAS.set(len(self.replicas))
        if self.settling != settling:
            if settling:
                log.info("every replica counted shares again: this one may take more than its part again")
            self._limits_look_again()
        return True

    @property
    def replicas(self) -> list[str]:
        """The replicas counted in the parts of a limit (sorted; empty: Redis never answered)."""
        return self.roll.replicas

    @property
    def settling(self) -> bool:
        """Redis answers, yet this replica keeps to its part of every limit: a replica it
        counts has not said it shares again since this one came back, or says it works alone
        (shared_roll.py)."""
        return self.up and self.roll.settling

    def _limits_look_again(self) -> None:
        """Up, down, or keeping to the parts changed: the gauge follows, and every limit's
        waiters look again."""
        metrics.SHARED_SETTLING.set(1 if self.settling else 0)
        for limit in self._limits.values():
            limit.state_changed()

    def _mark(self, up: bool, error: str = "") -> None:
        if up == self.up:
            return
        self.up = up
        metrics.SHARED_UP.set(1 if up else 0)
        self.on_change(up)
        if up:
            log.info("shared state reachable: limits, breakers and paid images are shared again")
            self.spawn(self._listen())
        else:
            self.outages += 1
            self._check.set()  # the word "alone" goes to Redis at once, for when it answers again
            log.error(
                "shared state unavailable: each replica uses its part of every limit and its own breakers "
                "until it is back",
                extra={"error": error, "replicas_seen": len(self.replicas) or None},
            )
        self._limits_look_again()

    async def _watch(self) -> None:
        """The ping outside the request path (the heartbeat that counts the replicas): every
        PING_EVERY seconds, and at once after a late answer. It alone takes slow answers for
        a dead Redis, and it brings it back."""
        missed = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._check.wait(), PING_EVERY)
            self._check.clear()
            if not self.up:
                # Connections from before the outage are dead (a restarted Redis closed
                # them): drop the idle ones, so the first call after the ping does not fail.
                # Not those in use: a call sent just before the state went down may be
                # opening one, and redis-py fails with an AttributeError on a connection
                # closed under it (those fail or finish on their own).
                with contextlib.suppress(RedisError, OSError):
                    await self.redis.connection_pool.disconnect(inuse_connections=False)
            answered = await self._ping()
            if answered is True:
                missed = 0
                if not self.up and await self._rejoin():
                    self.roll.came_back(self._now)  # before anyone shares: see shared_roll.py
                    self._mark(True)
                continue
            missed += 1
            if answered:  # refused, reset: no doubt
                self._mark(False, answered)
            elif missed >= PINGS_MISSED:
                self._mark(False, f"{missed} pings in a row got no answer within {self.ping_timeout:g} s")

    async def _rejoin(self) -> bool:
        """Before limits are shared again: the slots this replica took alone meanwhile are
        registered in Redis (and those it gave back removed), so nobody counts without them."""
        try:
            async with asyncio.timeout(self.ping_timeout):
                for limit in self._limits.values():
                    await limit.renew(direct=True)
        except Exception as exc:  # TimeoutError, RedisError, OSError, or the client's own (see call)
            log.info("shared state answers pings but not yet the rest", extra={"error": repr(exc)[:200]})
            return False
        return True

    def part(self, size: int) -> int:
        """How many of a limit's ``size`` places this replica may use on its own."""
        if self.replica in self.replicas:
            return part_of(size, self.replicas, self.replica)
        # Never saw Redis: the others cannot be counted.
        return max(1, math.floor(size * self.local_share))

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
        except (RedisConnectionError, ConnectionError) as exc:
            self._mark(False, f"{type(exc).__name__}: {exc}"[:200])
        except (RedisError, OSError):
            self._check.set()  # a slow read is the ping's to judge
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            if self.up:
                for limit in self._limits.values():
                    await limit.renew()

    def spawn(self, work: Awaitable[Any]) -> None:
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
        if self.up:
            await self.call("heartbeat", lambda: self.redis.zrem(self.key("replicas"), self.replica))
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()
        with contextlib.suppress(RedisError, OSError):
            await self._pinger.aclose()


def _settle(task: asyncio.Future[T], late: Callable[[T], None] | None) -> None:
    """A call the caller stopped waiting for has ended: its answer to ``late``."""
    if task.cancelled() or task.exception() is not None:
        return
    if late is not None:
        late(task.result())
