"""The breaker's states on a clock the test moves: K failures in a row open it, the cooldown
leads to half-open with exactly one probe, the probe decides, failed probes back off."""

from __future__ import annotations

from services.imagegen.breaker import Breaker, BreakerPolicy, BreakerState, Pass
from services.imagegen.providers.base import Outcome


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(**policy: float) -> tuple[Breaker, Clock]:
    clock = Clock()
    values = {"threshold": 3, "cooldown": 10.0, "hard_cooldown": 100.0, "max_cooldown": 35.0, **policy}
    return Breaker("m", BreakerPolicy(**values), clock), clock  # type: ignore[arg-type]


def fail(b: Breaker, outcome: Outcome = Outcome.TIMEOUT) -> None:
    granted = b.ask()
    assert granted.allowed
    b.record(outcome, "no image within 3.0 s", granted)


def test_k_timeouts_in_a_row_open_the_breaker() -> None:
    b, _ = breaker()
    fail(b)
    fail(b, Outcome.TRANSIENT)
    assert b.state is BreakerState.CLOSED and b.failures == 2
    fail(b, Outcome.INVALID_IMAGE)
    assert b.current_state() is BreakerState.OPEN
    skipped = b.ask()
    assert not skipped.allowed and "breaker open for 10 s more" in skipped.reason
    assert "3 failures in a row" in skipped.reason


def test_a_success_or_a_sign_of_life_resets_the_count() -> None:
    for alive in (Outcome.SUCCESS, Outcome.CONTENT_POLICY, Outcome.RATE_LIMITED):
        b, _ = breaker()
        fail(b)
        fail(b)
        granted = b.ask()
        b.record(alive, "", granted)
        fail(b)
        fail(b)
        assert b.state is BreakerState.CLOSED, alive


def test_a_hard_failure_opens_at_once_with_the_long_cooldown() -> None:
    b, clock = breaker()
    fail(b, Outcome.HARD_FAILURE)
    assert b.state is BreakerState.OPEN
    clock.now += 99
    assert not b.ask().allowed
    clock.now += 2
    assert b.ask().probe


def test_after_the_cooldown_exactly_one_probe_goes_and_success_closes() -> None:
    b, clock = breaker()
    for _ in range(3):
        fail(b)
    clock.now += 10
    assert b.current_state() is BreakerState.HALF_OPEN
    probe = b.ask()
    assert probe.allowed and probe.probe
    others = [b.ask() for _ in range(5)]
    assert not any(p.allowed for p in others)
    assert all("half-open" in p.reason for p in others)
    b.record(Outcome.SUCCESS, "", probe)
    assert b.state is BreakerState.CLOSED and b.ask() == Pass(True)


def test_a_failed_probe_reopens_with_a_longer_cooldown_up_to_the_cap() -> None:
    b, clock = breaker()
    for _ in range(3):
        fail(b)
    cooldowns = []
    for _ in range(4):
        clock.now += b.seconds_left()
        probe = b.ask()
        assert probe.probe
        b.record(Outcome.TIMEOUT, "no image within 3.0 s", probe)
        assert b.state is BreakerState.OPEN
        cooldowns.append(b.seconds_left())
    assert cooldowns == [20.0, 35.0, 35.0, 35.0]


def test_a_probe_that_never_went_out_lets_the_next_call_probe() -> None:
    b, clock = breaker()
    for _ in range(3):
        fail(b)
    clock.now += 10
    probe = b.ask()
    b.release(probe)  # e.g. no room at the provider in time
    assert b.ask().probe


def test_late_verdicts_of_calls_let_in_before_it_opened_change_nothing() -> None:
    b, _clock = breaker()
    early = [b.ask() for _ in range(5)]  # five calls in flight together
    for granted in early[:3]:
        b.record(Outcome.TIMEOUT, "t", granted)
    assert b.state is BreakerState.OPEN
    until = b.open_until
    b.record(Outcome.SUCCESS, "", early[3])
    b.record(Outcome.TIMEOUT, "t", early[4])
    assert b.state is BreakerState.OPEN and b.open_until == until
