"""Breakers shared by every replica: one replica's discovery (a billing stop, K timeouts
counted wherever they happened) skips the model on all of them, and once the cooldown has
passed exactly one probe goes out cluster-wide.

The state lives in a Redis hash per provider and changes only inside two scripts (ask,
record) with Redis's clock. Each replica's own Breaker mirrors it (for metrics, fair
shares and ListProviders) and takes over, as it was last seen, while Redis is down."""

from __future__ import annotations

import logging

from services.imagegen.breaker import COUNTED, Breaker, BreakerPolicy, BreakerState, Pass
from services.imagegen.providers.base import Outcome
from services.imagegen.shared import SharedState

log = logging.getLogger(__name__)

# -> allowed, probe, state, ms left of the cooldown, reason, failures in a row.
ASK = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local h = redis.call('HMGET', KEYS[1], 'state', 'until', 'reason', 'failures', 'probe_until')
local failures = tonumber(h[4] or '0')
if h[1] ~= 'open' then return {1, 0, 'closed', 0, '', failures} end
local left = tonumber(h[2]) - now
if left > 0 then return {0, 0, 'open', left, h[3], failures} end
if h[5] and tonumber(h[5]) > now then return {0, 0, 'probing', 0, h[3], failures} end
redis.call('HSET', KEYS[1], 'probe_until', now + tonumber(ARGV[1]))
return {1, 1, 'probing', 0, h[3], failures}
"""
# ARGV: kind (hard, counted, alive, none), reason, probe (1/0), threshold, cooldown ms,
# hard cooldown ms, max cooldown ms. -> the transition ('opened', 'closed' or '') and the
# cooldown it opened with (ms).
RECORD = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local h = redis.call('HMGET', KEYS[1], 'state', 'cooldown')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[7]) * 4)
local function open(cooldown, why)
  redis.call('HSET', KEYS[1], 'state', 'open', 'until', now + cooldown, 'cooldown', cooldown,
             'reason', why, 'failures', 0)
  redis.call('HDEL', KEYS[1], 'probe_until')
  return {'opened', cooldown}
end
if ARGV[3] == '1' then
  redis.call('HDEL', KEYS[1], 'probe_until')
  if ARGV[1] == 'hard' or ARGV[1] == 'counted' then
    local doubled = math.max(tonumber(h[2] or '0') * 2, tonumber(ARGV[5]))
    return open(math.min(doubled, tonumber(ARGV[7])), ARGV[2])
  end
  if ARGV[1] == 'alive' then
    redis.call('DEL', KEYS[1])
    return {'closed', 0}
  end
  return {'', 0}
end
if h[1] == 'open' then return {'', 0} end
if ARGV[1] == 'hard' then return open(tonumber(ARGV[6]), ARGV[2]) end
if ARGV[1] == 'counted' then
  local n = redis.call('HINCRBY', KEYS[1], 'failures', 1)
  if n >= tonumber(ARGV[4]) then
    return open(tonumber(ARGV[5]), n .. ' failures in a row (any replica), the last: ' .. ARGV[2])
  end
  return {'', 0}
end
if ARGV[1] == 'alive' then redis.call('HSET', KEYS[1], 'failures', 0) end
return {'', 0}
"""


def kind_of(outcome: Outcome) -> str:
    if outcome is Outcome.HARD_FAILURE:
        return "hard"
    if outcome in COUNTED:
        return "counted"
    return "none" if outcome is Outcome.SKIPPED else "alive"


class SharedBreakers:
    def __init__(self, shared: SharedState, policy: BreakerPolicy, probe_seconds: float) -> None:
        self.shared = shared
        self.policy = policy
        self.probe_ms = int(probe_seconds * 1000)

    async def ask(self, breaker: Breaker) -> Pass:
        script = self.shared.script("breaker-ask", ASK)
        found = await self.shared.call(
            "breaker", lambda: script(keys=[self.shared.key("breaker", breaker.name)], args=[self.probe_ms])
        )
        if found is None:
            return breaker.ask()  # Redis down: this replica's own breaker decides
        allowed, probe, state, left_ms, reason, failures = found
        state = state.decode() if isinstance(state, bytes) else state
        reason = reason.decode() if isinstance(reason, bytes) else str(reason or "")
        breaker.mirror(
            BreakerState.CLOSED if state == "closed" else BreakerState.OPEN, int(left_ms) / 1000, reason, int(failures)
        )
        if allowed:
            if probe:
                log.info("breaker half-open: this replica sends the one probe", extra={"provider": breaker.name})
            return Pass(True, probe=bool(probe))
        if state == "probing":
            return Pass(False, reason="breaker half-open: one probe request (on some replica) is testing the provider")
        return Pass(False, reason=f"breaker open for {int(left_ms) / 1000:.0f} s more after: {reason}")

    async def record(self, breaker: Breaker, outcome: Outcome, reason: str, granted: Pass) -> None:
        """After an attempt (or, with SKIPPED, a probe given back without a verdict)."""
        script = self.shared.script("breaker-record", RECORD)
        policy = self.policy
        args = [
            kind_of(outcome),
            reason[:300],
            "1" if granted.probe else "0",
            policy.threshold,
            int(policy.cooldown * 1000),
            int(policy.hard_cooldown * 1000),
            int(policy.max_cooldown * 1000),
        ]
        done = await self.shared.call(
            "breaker", lambda: script(keys=[self.shared.key("breaker", breaker.name)], args=args)
        )
        if done is None:  # Redis down: this replica's own breaker counts it
            if outcome is Outcome.SKIPPED:
                breaker.release(granted)
            else:
                breaker.record(outcome, reason, granted)
            return
        change = done[0].decode() if isinstance(done[0], bytes) else str(done[0])
        if change == "opened":
            cooldown = int(done[1]) / 1000
            breaker.mirror(BreakerState.OPEN, cooldown, reason, 0)
            log.error(
                "provider skipped on every replica until its breaker cools down",
                extra={"provider": breaker.name, "reason": reason, "cooldown_s": cooldown},
            )
        elif change == "closed":
            breaker.mirror(BreakerState.CLOSED, 0.0, "", 0)
            log.info(
                "provider answered its probe; back in the chain on every replica", extra={"provider": breaker.name}
            )
