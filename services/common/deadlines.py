"""One helper decides how much time a piece of work may take.

A handler makes a :class:`Budget` from the caller's deadline and its own limit; every call
it makes gets ``budget.slice(own_timeout)``: the smaller of its own timeout and what is
left. Work never runs past the caller's deadline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc


@dataclass
class Budget:
    deadline: float  # time.monotonic() value

    @classmethod
    def of(cls, seconds: float) -> Budget:
        return cls(time.monotonic() + seconds)

    @classmethod
    def from_context(cls, context: grpc.aio.ServicerContext, own: float) -> Budget:
        """min(own budget, the caller's remaining deadline)."""
        remaining = context.time_remaining()
        limit = own if remaining is None else min(own, max(remaining, 0.0))
        return cls.of(limit)

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    def slice(self, own: float, reserve: float = 0.0) -> float:
        """Time for one call: min(its own timeout, what is left minus a reserve)."""
        return max(min(own, self.remaining() - reserve), 0.0)
