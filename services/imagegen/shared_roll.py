"""The roll call of the imagegen replicas sharing limits through Redis: who is alive, and
whether each one shares the limits or works alone, from the heartbeat every replica sends
(the ping in shared.py).

Why it matters: a replica that works alone (Redis down, as far as it knows) takes slots
that are not in Redis. When Redis answers again, each replica finds out on its own ping,
up to a ping period apart, and registers its alone slots then. A replica back first that
trusted Redis at once would count without the others' alone slots: two replicas with a
limit of 2, one back and taking both places while the other still holds its one, make 3
at the provider. So a replica keeps to its part of every limit (as while down) until every
replica it counts has said, since it came back, that it shares again, and while any replica
it sees alive says it works alone. A replica that is not heard from for a lease after that
is gone (the same rule as its heartbeat's lease).

Each replica's last word is kept in Redis with the number of outages it has seen: a ping
sent before an outage and run by Redis only when it thaws must not overwrite the word of a
replica that has gone alone since (the ping after an outage is sent at once, so its word
is in Redis before it takes a slot alone, or the next ping brings it)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

# Every replica's heartbeat. KEYS[1]: the replicas alive (name -> lease end, ms), KEYS[2]:
# each replica's last word (name -> "outages sharing when"). ARGV: lease (ms), this replica,
# its outages seen, '1' when it shares. A word with fewer outages than the one kept is a
# ping from before an outage that Redis ran late: it only renews the lease.
# -> {Redis's time, the replicas alive, the words (name, word, ...)}.
HEARTBEAT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local lease = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + lease, ARGV[2])
redis.call('PEXPIRE', KEYS[1], lease * 2)
local kept = redis.call('HGET', KEYS[2], ARGV[2])
if not kept or tonumber(string.match(kept, '^(%d+)')) <= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. now)
end
local words = redis.call('HGETALL', KEYS[2])
for i = 1, #words, 2 do
  if tonumber(string.match(words[i + 1], '(%d+)$')) < now - lease then
    redis.call('HDEL', KEYS[2], words[i])
  end
end
redis.call('PEXPIRE', KEYS[2], lease * 2)
return {now, redis.call('ZRANGE', KEYS[1], 0, -1), redis.call('HGETALL', KEYS[2])}
"""


@dataclass(frozen=True)
class Word:
    """A replica's last heartbeat: whether it shared the limits then, and when (Redis ms)."""

    sharing: bool
    at: int


def words_of(flat: Sequence[bytes | str]) -> dict[str, Word]:
    """The heartbeat's HGETALL answer (name, "outages sharing when", ...) by replica."""
    words: dict[str, Word] = {}
    for name, raw in zip(flat[::2], flat[1::2], strict=True):
        _outages, sharing, at = _text(raw).split()
        words[_text(name)] = Word(sharing == "1", int(at))
    return words


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class Roll:
    """What one replica knows of the others, from its heartbeats."""

    me: str
    lease: float
    # The replicas counted in the parts of a limit (sorted; empty: Redis never answered).
    replicas: list[str] = field(default_factory=list)
    # Since coming back (Redis ms of that heartbeat; 0: not waiting), the replicas counted
    # then that have not said they share again (in a later millisecond); given up on at ``wait_until`` (monotonic)
    # when no longer alive.
    since: int = 0
    waiting: set[str] = field(default_factory=set)
    wait_until: float = 0.0
    # Replicas alive whose last word is that they work alone.
    alone: set[str] = field(default_factory=set)

    @property
    def settling(self) -> bool:
        """Keep to this replica's part of every limit even though Redis answers."""
        return bool(self.waiting or self.alone)

    def heard(self, now: int, alive: Sequence[bytes | str], flat: Sequence[bytes | str], *, up: bool) -> None:
        """A heartbeat answered at Redis time ``now``: the replicas alive and their words
        (as the script answers them)."""
        words = words_of(flat)
        seen = {_text(name) for name in alive} | {self.me}
        if self.since:
            self.waiting = {
                name
                for name in self.waiting | seen
                if name != self.me and not (name in words and words[name].sharing and words[name].at > self.since)
            }
            if time.monotonic() >= self.wait_until:
                self.waiting &= seen
            if not self.waiting:
                self.since = 0
        self.alone = {name for name in seen - {self.me} if name in words and not words[name].sharing}
        if up and not self.settling:
            self.replicas = sorted(seen)
        else:  # the parts never grow with a replica unheard from: it may still hold its own
            self.replicas = sorted(seen | set(self.replicas) | self.waiting)

    def came_back(self, now: int) -> None:
        """Redis answered again (its time ``now``) and this replica's alone slots are in it:
        wait for every replica counted to say it shares again."""
        self.since = now
        self.waiting = set(self.replicas) - {self.me}
        self.wait_until = time.monotonic() + self.lease
        if not self.waiting:
            self.since = 0
