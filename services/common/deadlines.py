"""One helper decides how much time a piece of work may take.

A handler makes a :class:`Deadline` from the caller's deadline and its own time limit;
every call it makes gets ``deadline.slice(own_timeout)``: the smaller of its own timeout
and what is left. Work never runs past the caller's deadline. (Time is a deadline; money
is a budget, gateway/budget.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

log = logging.getLogger(__name__)
T = TypeVar("T")


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


# Work cut at its time limit that is still ending (held so it is not collected meanwhile).
_ENDING: set[asyncio.Future[Any]] = set()


async def within(seconds: float, work: Awaitable[T]) -> T:
    """``await work`` for at most ``seconds``: then the work is cancelled and TimeoutError
    raised at once, the work left to end on its own. ``asyncio.timeout`` waits until the
    cancelled work has ended, and a client may take long to: psycopg, cancelled in a query,
    asks the server to cancel it and waits for that, up to 10 s on a connection that no
    longer answers. A caller cancelled meanwhile leaves the work the same way."""
    return await Limit(seconds).run(work)


class Limit:
    """`within`'s time limit, whose clock the work can stop while it waits on something
    the limit is not about (``paused()``): a call with a deadline of its own to another
    service, whose slowness is not the limited part's fault."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self._running = asyncio.Event()
        self._running.set()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The clock stands still while the block runs (bound it by its own deadline)."""
        stopped = time.monotonic()
        self._running.clear()
        try:
            yield
        finally:
            self.ends += time.monotonic() - stopped
            self._running.set()

    async def run(self, work: Awaitable[T]) -> T:
        task = asyncio.ensure_future(work)
        try:
            while not task.done():
                if not self._running.is_set():  # paused: wait for the work, or for the clock again
                    resumed = asyncio.ensure_future(self._running.wait())
                    try:
                        await asyncio.wait({task, resumed}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        resumed.cancel()
                    continue
                left = self.ends - time.monotonic()
                if left <= 0:
                    break
                await asyncio.wait({task}, timeout=left)  # a pause begun meanwhile is seen next turn
        except asyncio.CancelledError:
            _leave(task)
            raise
        if not task.done():
            _leave(task)
            raise TimeoutError(f"no answer within {self.seconds:.2f} s")
        return task.result()


def _leave(task: asyncio.Future[Any]) -> None:
    task.cancel()
    if not task.done():
        _ENDING.add(task)
        task.add_done_callback(_ended)


def _ended(task: asyncio.Future[Any]) -> None:
    _ENDING.discard(task)
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.debug("work cut at its time limit ended with an error", extra={"error": repr(exc)})
