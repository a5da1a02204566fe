"""Paid images shared by every replica: an image paid for on one replica answers the
scene's retry on any other, even after the first one died before it could answer.

Each image is stored in Redis the moment the chain has it (before the caller is answered),
with a TTL (IMAGEGEN_REPLAY_TTL) and within a byte bound (IMAGEGEN_SHARED_REPLAY_MIB;
the oldest go first). A scene being paid for right now is marked too, so a retry that
lands on another replica waits for that image instead of buying a second one."""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import asdict
from typing import Any

from services.common.images import ImageInfo
from services.imagegen.providers.base import Outcome, Usage
from services.imagegen.replay import ReplayKey
from services.imagegen.results import AttemptRecord, ChainResult
from services.imagegen.shared import SharedState

# KEYS: the entry, the index (name -> stored at), the sizes (name -> bytes, and _total), the
# scene's "being paid for" mark (cleared: it is paid). ARGV: the blob, TTL ms, byte bound,
# name, the entries' key prefix. Oldest out first.
PUT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local size = string.len(ARGV[1])
local before = tonumber(redis.call('HGET', KEYS[3], ARGV[4]) or '0')
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
redis.call('ZADD', KEYS[2], now, ARGV[4])
redis.call('HSET', KEYS[3], ARGV[4], size)
local total = redis.call('HINCRBY', KEYS[3], '_total', size - before)
while total > tonumber(ARGV[3]) do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not oldest then break end
  redis.call('ZREM', KEYS[2], oldest)
  redis.call('DEL', ARGV[5] .. oldest)
  total = redis.call('HINCRBY', KEYS[3], '_total', -tonumber(redis.call('HGET', KEYS[3], oldest) or '0'))
  redis.call('HDEL', KEYS[3], oldest)
end
redis.call('DEL', KEYS[4])
return total
"""
# While a scene is being paid for somewhere, a retry elsewhere looks this often for it.
WAIT_EVERY = 0.1


def encode(result: ChainResult) -> bytes:
    meta = {
        "info": asdict(result.info),
        "provider": result.provider,
        "attempts": [
            {**asdict(a), "outcome": a.outcome.value, "usage": asdict(a.usage) if a.usage else None}
            for a in result.attempts
        ],
    }
    head = json.dumps(meta).encode()
    return struct.pack(">I", len(head)) + head + result.image


def decode(blob: bytes) -> ChainResult:
    (length,) = struct.unpack(">I", blob[:4])
    meta = json.loads(blob[4 : 4 + length])
    attempts = [
        AttemptRecord(
            a["provider"],
            Outcome(a["outcome"]),
            a["reason"],
            a["ms"],
            Usage(**a["usage"]) if a["usage"] else None,
            a["cost"],
        )
        for a in meta["attempts"]
    ]
    return ChainResult(blob[4 + length :], ImageInfo(**meta["info"]), meta["provider"], False, attempts)


class SharedReplay:
    def __init__(self, shared: SharedState, max_bytes: int, ttl: float, paying_for: float) -> None:
        self.shared = shared
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.paying_for = paying_for  # how long a scene counts as being paid for
        self._tasks: set[asyncio.Future[Any]] = set()

    def _entry(self, key: ReplayKey) -> str:
        return self.shared.key("paid", key.digest)

    async def get(self, key: ReplayKey) -> ChainResult | None:
        blob = await self.shared.call("replay", lambda: self.shared.redis.get(self._entry(key)))
        return decode(blob) if isinstance(blob, bytes) and blob else None

    def put(self, key: ReplayKey | None, result: ChainResult) -> None:
        """Store in the background (the caller's answer does not wait for Redis)."""
        if key is None or result.placeholder or len(result.image) > self.max_bytes:
            return
        task = asyncio.ensure_future(self.store(key, result))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def store(self, key: ReplayKey, result: ChainResult) -> None:
        script = self.shared.script("replay-put", PUT)
        keys = [
            self._entry(key),
            self.shared.key("paid-index"),
            self.shared.key("paid-sizes"),
            self.shared.key("paying", key.digest),
        ]
        args = [encode(result), int(self.ttl * 1000), self.max_bytes, key.digest, self.shared.key("paid", "")]
        await self.shared.call("replay", lambda: script(keys=keys, args=args))

    async def claim(self, key: ReplayKey) -> bool:
        """Mark the scene as being paid for by this replica; False when another one is."""
        mark = self.shared.key("paying", key.digest)

        async def mark_it() -> bool:  # redis-py answers None when NX finds the key
            return bool(await self.shared.redis.set(mark, self.shared.replica, nx=True, px=int(self.paying_for * 1000)))

        done = await self.shared.call("replay", mark_it)
        return done is None or done  # Redis down: nobody can say; pay

    def unclaim(self, key: ReplayKey) -> None:
        """The scene was not paid for after all (a placeholder, an error)."""
        mark = self.shared.key("paying", key.digest)
        task = asyncio.ensure_future(self.shared.call("replay", lambda: self.shared.redis.delete(mark)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self, key: ReplayKey, seconds: float) -> ChainResult | None:
        """The image another replica is paying for, once it is stored (or None when that
        replica gives up, dies, or ``seconds`` pass)."""
        mark = self.shared.key("paying", key.digest)
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while loop.time() < until:
            found = await self.get(key)
            if found is not None:
                return found
            if not await self.shared.call("replay", lambda: self.shared.redis.exists(mark)):
                return await self.get(key)
            await asyncio.sleep(WAIT_EVERY)
        return None
