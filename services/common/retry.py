"""Retry policy as data, in one place: which errors, how many attempts, what backoff,
and never an attempt (or a sleep) that the caller's deadline cannot fit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from services.common.deadlines import Deadline


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    # Sleep before attempt 2, 3, ...; the last value repeats.
    backoff: Sequence[float]
    # An attempt with less time than this left is not started.
    min_attempt: float
    retry_on: tuple[type[BaseException], ...]


# Storage uploads: 3 attempts, 0.5 s then 1 s, only transient errors.
UPLOAD_BACKOFF = (0.5, 1.0)
# Status reads: 1 try + 2 retries, 100 ms then 200 ms.
STATUS_READ_BACKOFF = (0.1, 0.2)


class _Backoff(wait_base):
    def __init__(self, steps: Sequence[float]) -> None:
        self.steps = list(steps) or [0.0]

    def __call__(self, retry_state: RetryCallState) -> float:
        index = min(retry_state.attempt_number - 1, len(self.steps) - 1)
        return self.steps[index]


class _StopWhenDeadlineCannotFit(stop_base):
    """Stop instead of sleeping when the sleep plus a minimal attempt would pass the deadline."""

    def __init__(self, deadline: Deadline, backoff: _Backoff, min_attempt: float) -> None:
        self.deadline = deadline
        self.backoff = backoff
        self.min_attempt = min_attempt

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.backoff(retry_state) + self.min_attempt > self.deadline.remaining()


def retrying_within(seconds: float, retry_if: Callable[[BaseException], bool]) -> AsyncRetrying:
    """Keep retrying a write that must land (the end of a video run) for a bounded time,
    backing off from 0.25 s to 2 s."""
    return AsyncRetrying(
        stop=stop_after_delay(seconds),
        wait=wait_exponential(multiplier=0.25, max=2.0),
        retry=retry_if_exception(retry_if),
        reraise=True,
    )


def retrying(policy: RetryPolicy, deadline: Deadline) -> AsyncRetrying:
    backoff = _Backoff(policy.backoff)
    return AsyncRetrying(
        stop=stop_after_attempt(policy.attempts) | _StopWhenDeadlineCannotFit(deadline, backoff, policy.min_attempt),
        wait=backoff,
        retry=retry_if_exception_type(policy.retry_on),
        reraise=True,
    )
