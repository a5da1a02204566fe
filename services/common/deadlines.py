"""One helper decides how much time a piece of work may take.

A handler makes a :class:`Deadline` from the caller's deadline and its own time limit;
every call it makes gets ``deadline.slice(own_timeout)``: the smaller of its own timeout
and what is left. Work never runs past the caller's deadline. (Time is a deadline; money
is a budget, gateway/budget.py.)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import grpc


@dataclass
class Deadline:
    at: float  # time.monotonic() value
    # The caller's own deadline (inf: none) and this handler's limit, for a deadline that
    # starts later than the call (see start()).
    limit: float = math.inf
    own: float = math.inf
    started: bool = False

    @classmethod
    def of(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, own=seconds)

    @classmethod
    def from_context(cls, context: grpc.aio.ServicerContext, own: float) -> Deadline:
        """min(own time limit, the caller's remaining deadline)."""
        now = time.monotonic()
        remaining = context.time_remaining()
        limit = math.inf if remaining is None else now + max(remaining, 0.0)
        return cls(min(now + own, limit), limit, own)

    def start(self) -> None:
        """Count the own time limit from now (once): for work that first waited its turn.
        The caller's deadline still bounds it."""
        if not self.started:
            self.started = True
            self.at = min(time.monotonic() + self.own, self.limit)

    def remaining(self) -> float:
        return max(self.at - time.monotonic(), 0.0)

    def slice(self, own: float, reserve: float = 0.0) -> float:
        """Time for one call: min(its own timeout, what is left minus a reserve)."""
        return max(min(own, self.remaining() - reserve), 0.0)
