"""Admission: when a provider request may go out.

A request goes to its provider only while it holds a place in each of its gates: its
video's lane (at most `video_parallelism` requests of one video at the providers) and its
provider's concurrency limit (shared by every caller). The chain takes the places before
it calls the provider, and the time spent waiting for them is not part of the attempt."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from typing import Protocol


class Gate(Protocol):
    """A place to hold while a request is out: an asyncio.Semaphore, or a provider limit
    shared by every replica (services/imagegen/shared.py)."""

    async def acquire(self) -> bool: ...

    def release(self) -> None: ...


class Admission:
    """One attempt's way to its provider through ``gates``, taken in order."""

    def __init__(self, gates: Sequence[Gate]) -> None:
        self._gates = list(gates)
        self._held: list[Gate] = []

    async def enter(self) -> None:
        """Wait for a place in every gate (what was taken stays held if this is cancelled,
        until :meth:`leave`)."""
        for gate in self._gates[len(self._held) :]:
            await gate.acquire()
            self._held.append(gate)

    def hand_over(self, gate: Gate) -> None:
        """The place in ``gate`` is no longer this admission's to give back: the request
        that holds it gives it back when it ends."""
        self._held.remove(gate)

    def leave(self) -> None:
        """Give the places back (safe to call more than once)."""
        while self._held:
            self._held.pop().release()


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
