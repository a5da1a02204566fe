"""Admission: when a provider request may go out.

A request goes to its provider only while it holds a place in each of its gates: its
video's lane (at most `video_parallelism` requests of one video at the providers) and its
provider's concurrency limit (shared by every caller). It asks for them at the last moment,
from the HTTP client's request hook, so a request that must wait is already built by the
SDK and goes out the instant an earlier request of its video is answered, without another
round trip through the caller. Its places are given back as soon as the provider's answer
has been read (the response hook wraps the body).

Waiting is not part of an attempt: the chain starts the attempt's clock when the request
is let in (`on_admit`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

import httpx2

# The admission of the attempt running in this task, seen by the HTTP client's hooks.
_CURRENT: ContextVar[Admission | None] = ContextVar("admission", default=None)


class Admission:
    """One attempt's way to its provider through ``gates``, taken in order."""

    def __init__(self, gates: Sequence[asyncio.Semaphore], on_admit: Callable[[], None]) -> None:
        self._gates = gates
        self._held = 0
        self._on_admit = on_admit
        self.admitted = False

    async def enter(self) -> None:
        """Wait for a place in every gate (a no-op while they are held)."""
        while self._held < len(self._gates):
            await self._gates[self._held].acquire()
            self._held += 1
        if not self.admitted:
            self.admitted = True
            self._on_admit()

    def leave(self) -> None:
        """Give the places back (safe to call more than once)."""
        while self._held:
            self._held -= 1
            self._gates[self._held].release()

    @contextlib.contextmanager
    def governing(self) -> Iterator[None]:
        """Requests sent by this task inside the block wait for this admission."""
        token = _CURRENT.set(self)
        try:
            yield
        finally:
            _CURRENT.reset(token)
            self.leave()


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


class _LeavingStream(httpx2.AsyncByteStream):
    """A response body that gives the admission back once it has been read (or dropped)."""

    def __init__(self, inner: Any, admission: Admission) -> None:
        self._inner = inner
        self._admission = admission

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._admission.leave()
        # One turn of the event loop, so a request waiting at the door goes out now rather
        # than after this answer has been parsed, checked and sent on (~1 ms).
        await asyncio.sleep(0)


async def _admit(request: httpx2.Request) -> None:
    admission = _CURRENT.get()
    if admission is not None:
        await admission.enter()


async def _leave_after_body(response: httpx2.Response) -> None:
    admission = _CURRENT.get()
    if admission is not None:
        response.stream = _LeavingStream(response.stream, admission)


def event_hooks() -> dict[str, list[Callable[[Any], Any]]]:
    """The hooks that make an HTTP client's requests wait for their admission."""
    return {"request": [_admit], "response": [_leave_after_body]}
