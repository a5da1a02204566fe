"""`within`: a time limit that answers its caller at the limit, even when the work it cuts
takes long to end (as psycopg does, cancelling a query on a connection that hangs)."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.common import deadlines
from services.common.deadlines import Limit, within


class SlowToEnd:
    """Work that, cancelled, keeps going for ``linger`` seconds before it ends."""

    def __init__(self, linger: float) -> None:
        self.linger = linger
        self.cancelled = asyncio.Event()
        self.ended = asyncio.Event()

    async def run(self) -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            await asyncio.sleep(self.linger)  # what a driver's cancel does meanwhile
            raise
        finally:
            self.ended.set()
        return "never"


async def test_work_done_in_time_is_answered() -> None:
    async def quick() -> int:
        await asyncio.sleep(0)
        return 7

    assert await within(1.0, quick()) == 7


async def test_an_error_of_the_work_is_its_callers() -> None:
    async def failing() -> None:
        raise LookupError("no such row")

    with pytest.raises(LookupError, match="no such row"):
        await within(1.0, failing())


async def test_at_the_limit_the_caller_is_answered_at_once_and_the_work_is_cancelled_and_left_to_end() -> None:
    work = SlowToEnd(linger=2.0)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await within(0.1, work.run())
    took = time.monotonic() - started
    assert took < 1.0, f"answered after {took:.2f} s: it waited for the cut work to end (2 s)"
    assert len(deadlines._ENDING) == 1  # held, so it is not collected while it ends
    async with asyncio.timeout(10):
        await work.cancelled.wait()  # cancelled: it ends on its own now
    assert not work.ended.is_set()
    async with asyncio.timeout(10):
        await work.ended.wait()
    await asyncio.sleep(0)  # its done-callback
    assert not deadlines._ENDING


async def test_a_caller_cancelled_meanwhile_cancels_the_work_without_waiting_for_it() -> None:
    work = SlowToEnd(linger=2.0)
    caller = asyncio.create_task(within(60.0, work.run()))
    await asyncio.sleep(0.05)
    caller.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert time.monotonic() - started < 1.0
    async with asyncio.timeout(10):
        await work.cancelled.wait()
    assert not work.ended.is_set()
    async with asyncio.timeout(10):
        await work.ended.wait()


async def test_a_paused_clock_does_not_count_what_the_work_waits_on_elsewhere() -> None:
    """A queue start waits on the status service (its own deadline) inside the queue's time
    limit: that wait is not the limited part's, and the work goes on past the limit."""
    limit = Limit(0.3)

    async def work() -> str:
        with limit.paused():
            await asyncio.sleep(0.6)  # another service's call, twice the limit
        await asyncio.sleep(0.05)
        return "done"

    assert await limit.run(work()) == "done"


async def test_outside_its_pauses_the_work_is_cut_at_the_limit() -> None:
    limit = Limit(0.3)

    async def work() -> None:
        with limit.paused():
            await asyncio.sleep(0.2)
        await asyncio.sleep(3600)  # the limited part hangs

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await limit.run(work())
    took = time.monotonic() - started
    assert 0.45 <= took < 0.5 + 2.0, f"cut after {took:.2f} s: the limit (0.3 s) plus the pause (0.2 s)"
