"""A provider's breaker: closed, open or half-open.

It learns from every kind of failure. A hard failure (bad key, billing, model gone) opens it
at once; `threshold` timeouts or transient failures in a row open it too. While it is open,
calls skip the provider. Once the cooldown has passed it is half-open: exactly one call is
let through as a probe while the others keep skipping; the probe's success closes it, its
failure opens it again with a cooldown twice as long (up to `max_cooldown`).

A rate limit or a refused prompt says the provider is alive: it resets the count of
failures in a row (and a probe that meets one closes the breaker)."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.imagegen import metrics
from services.imagegen.providers.base import Outcome

log = logging.getLogger(__name__)

# Outcomes that say the provider is unwell (a hard failure opens at once).
COUNTED = frozenset({Outcome.TIMEOUT, Outcome.TRANSIENT, Outcome.INVALID_IMAGE})


class BreakerState(enum.Enum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


STATE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


@dataclass(frozen=True)
class BreakerPolicy:
    threshold: int = 3  # timeouts or transient failures in a row that open the breaker
    cooldown: float = 30.0  # after timeouts and transient failures
    hard_cooldown: float = 300.0  # after a hard failure
    max_cooldown: float = 1800.0  # a failing probe doubles the cooldown up to this


@dataclass(frozen=True)
class Pass:
    """A breaker's answer to one call: go (``probe``: as the half-open probe), or skip."""

    allowed: bool
    probe: bool = False
    reason: str = ""


class Breaker:
    def __init__(self, name: str, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.policy = policy
        self._clock = clock
        self.state = BreakerState.CLOSED
        self.failures = 0  # counted failures in a row
        self.reason = ""  # why it opened last
        self.open_until = 0.0
        self._cooldown = 0.0  # the current cooldown (grows with failed probes)
        self._probing = False
        self._opening = asyncio.Event()  # set (and replaced) each time the breaker opens
        self._publish()

    async def opened(self) -> None:
        """Returns the next time the breaker opens (for requests waiting to be let in)."""
        await self._opening.wait()

    # What the chain asks before an attempt.
    def would_pass(self) -> bool:
        """Whether a call now would be let through (without taking the probe)."""
        if self.state is BreakerState.CLOSED:
            return True
        return self._clock() >= self.open_until and not self._probing

    def ask(self) -> Pass:
        if self.state is BreakerState.CLOSED:
            return Pass(True)
        if self._clock() < self.open_until:
            return Pass(False, reason=f"breaker open for {self.seconds_left():.0f} s more after: {self.reason}")
        if self._probing:
            return Pass(False, reason="breaker half-open: one probe request is testing the provider")
        self._move(BreakerState.HALF_OPEN)
        self._probing = True
        log.info(
            "breaker half-open: one probe request tests the provider",
            extra={"provider": self.name, "after": self.reason},
        )
        return Pass(True, probe=True)

    def release(self, granted: Pass) -> None:
        """The call given ``granted`` ended without a verdict on the provider (no time left,
        no room at the provider): a probe's turn goes to the next call."""
        if granted.probe:
            self._probing = False

    # What the chain tells after an attempt.
    def record(self, outcome: Outcome, reason: str, granted: Pass) -> None:
        if granted.probe:
            self._probing = False
            if outcome is Outcome.HARD_FAILURE or outcome in COUNTED:
                self._open(reason, min(max(self._cooldown * 2, self.policy.cooldown), self.policy.max_cooldown))
                log.warning(
                    "probe failed; the provider stays skipped",
                    extra={"provider": self.name, "reason": reason, "cooldown_s": self._cooldown},
                )
            else:
                self._close()
            return
        if self.state is not BreakerState.CLOSED:
            return  # a call let in before the breaker opened: the state already says it
        if outcome is Outcome.HARD_FAILURE:
            self._open(reason, self.policy.hard_cooldown)
            log.error(
                "provider disabled until its breaker cools down: fix the key, billing or model",
                extra={"provider": self.name, "reason": reason, "cooldown_s": self._cooldown},
            )
        elif outcome in COUNTED:
            self.failures += 1
            if self.failures >= self.policy.threshold:
                self._open(f"{self.failures} failures in a row, the last: {reason}", self.policy.cooldown)
                log.error(
                    "provider keeps failing; skipped until a probe finds it well again",
                    extra={"provider": self.name, "reason": self.reason, "cooldown_s": self._cooldown},
                )
        elif outcome is not Outcome.SKIPPED:
            self.failures = 0

    def mirror(self, state: BreakerState, seconds_left: float, reason: str, failures: int) -> None:
        """Take the state the replicas share (services/imagegen/shared_breaker.py), quietly:
        the replica that moved it has said so. It is this breaker's state if Redis goes."""
        self.failures = failures
        self._probing = False
        if state is BreakerState.CLOSED:
            self.reason, self._cooldown, self.open_until = "", 0.0, 0.0
        else:
            self.reason = reason or self.reason
            self.open_until = self._clock() + seconds_left
            self._cooldown = max(self._cooldown, seconds_left, self.policy.cooldown)
        self._move(state)

    def seconds_left(self) -> float:
        return max(self.open_until - self._clock(), 0.0) if self.state is not BreakerState.CLOSED else 0.0

    def current_state(self) -> BreakerState:
        """OPEN until the cooldown ends, then HALF_OPEN (whether or not a probe went yet)."""
        if self.state is BreakerState.OPEN and self._clock() >= self.open_until:
            return BreakerState.HALF_OPEN
        return self.state

    def _open(self, reason: str, cooldown: float) -> None:
        self.reason, self._cooldown = reason, cooldown
        self.open_until = self._clock() + cooldown
        self.failures = 0
        self._move(BreakerState.OPEN)

    def _close(self) -> None:
        if self.state is not BreakerState.CLOSED:
            log.info("provider answered its probe; back in the chain", extra={"provider": self.name})
        self.failures, self._cooldown, self.reason = 0, 0.0, ""
        self._move(BreakerState.CLOSED)

    def _move(self, state: BreakerState) -> None:
        if state is not self.state:
            metrics.BREAKER_TRANSITIONS.labels(self.name, state.value).inc()
        self.state = state
        if state is BreakerState.OPEN:
            opening, self._opening = self._opening, asyncio.Event()
            opening.set()
        self._publish()

    def _publish(self) -> None:
        metrics.BREAKER_OPEN.labels(self.name).set(0 if self.state is BreakerState.CLOSED else 1)
        metrics.BREAKER_STATE.labels(self.name).set(STATE_VALUE[self.state])
