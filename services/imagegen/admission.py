"""Admission: when a provider request may go out.

A request goes to its provider only while it holds a place in each of its gates: its
video's lane (at most `video_parallelism` calls of one video in the chain at once) and its
provider's concurrency limit (shared by every caller). The chain takes them before it calls
the provider (services/imagegen/chain.py): the lane once per call, before its clock starts;
a provider's place for each attempt, within that model's fair share of the call's time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Protocol

from services.imagegen.breaker import Breaker, BreakerState, Pass

NO_ROOM = "no room at the provider in time"


class Gate(Protocol):
    """A place to hold while a request is out: an asyncio.Semaphore, or a provider limit
    shared by every replica (services/imagegen/shared.py)."""

    async def acquire(self) -> bool: ...

    def release(self) -> None: ...


class VideoLanes:
    """One lane per video with calls in flight: a semaphore as wide as the callers ask."""

    def __init__(self) -> None:
        self._lanes: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @contextlib.contextmanager
    def lane(self, video_id: str, width: int) -> Iterator[asyncio.Semaphore | None]:
        """The video's lane while the block runs (None when no limit is asked for). The first
        caller of a video decides the width; the lane goes when its last caller does."""
        if not video_id or width <= 0:
            yield None
            return
        semaphore, users = self._lanes.get(video_id) or (asyncio.Semaphore(width), 0)
        self._lanes[video_id] = (semaphore, users + 1)
        try:
            yield semaphore
        finally:
            semaphore, users = self._lanes[video_id]
            if users == 1:
                del self._lanes[video_id]
            else:
                self._lanes[video_id] = (semaphore, users - 1)

    def users(self, video_id: str) -> int:
        """Calls of the video in flight (running or waiting their turn)."""
        return self._lanes.get(video_id, (None, 0))[1]

    def __len__(self) -> int:
        return len(self._lanes)


async def take_place(gate: Gate, breaker: Breaker, granted: Pass, until: float) -> str:
    """Wait for a place in ``gate`` (a provider's concurrency limit, whose places requests
    left to finish late may still hold) until ``until`` (a time.monotonic() value) at the
    latest, and no longer than ``breaker`` stays closed (a probe's ``granted`` pass waits
    regardless). Answers "" holding a place, else why there is none."""

    def opened() -> str:
        if granted.probe or breaker.state is BreakerState.CLOSED:
            return ""
        return f"breaker opened while waiting: {breaker.reason}"

    if opened():
        return opened()
    if isinstance(gate, asyncio.Semaphore) and not gate.locked():
        await gate.acquire()  # a free place: taken at once, with no waiter to set up
        return ""
    taking = asyncio.ensure_future(gate.acquire())
    opening = asyncio.ensure_future(breaker.opened())
    try:
        await asyncio.wait(
            {taking, opening}, timeout=max(until - time.monotonic(), 0.0), return_when=asyncio.FIRST_COMPLETED
        )
    except asyncio.CancelledError:
        await _give_up(gate, taking)
        raise
    finally:
        opening.cancel()
    if not taking.done():
        await _give_up(gate, taking)
        return opened() or f"{NO_ROOM} (its fair share ends)"
    if not taking.result():
        return (
            "no part of the provider's limit is this replica's while the shared state is down "
            "or the replicas are coming back to it"
        )
    if opened():
        gate.release()
        return opened()
    return ""


async def _give_up(gate: Gate, taking: asyncio.Future[bool]) -> None:
    """Stop waiting for a place in ``gate``; one granted meanwhile is given back."""
    if not taking.done():
        taking.cancel()
        await asyncio.wait({taking})
    if not taking.cancelled() and taking.exception() is None:
        gate.release()
