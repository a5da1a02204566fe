"""Reading a video's status for a caller: one place that decides what an answer is and who
may see it.

Every answer that names a video is checked against the caller, degraded or not, streamed
or not: a signed-in user sees only their own videos (someone else's is a 404, byte for byte
as one that does not exist); when the owner cannot be known (the status service does not
answer and this gateway remembers nothing of the video), a signed-in user gets 503 with a
Retry-After instead of a made-up answer. Operators (the service token) and callers with
users off see every video. What the status store said when it failed stays in the logs: a
degraded answer gives a generic reason."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from gateway.answers import LastKnown, queued_json, status_json
from gateway.auth import OPERATOR, Caller
from gateway.clients import ServiceClients
from gateway.errors import BreakerOpen, HTTPError, ServiceDown, ServiceRefused, video_not_found
from gateway.runner import Runner
from storyshort.status.v1 import status_pb2

log = logging.getLogger("status")
# What a signed-in user's client should wait before asking again when the owner is unknown.
UNKNOWN_OWNER_RETRY = 5
# The reasons a degraded answer gives (the details are in the logs).
STORE_DOWN = "status store unavailable; this is the last known state"
SERVICE_DOWN = "status service unavailable; this is the last known state"


@dataclass(frozen=True)
class Seen:
    """A status answer and whose video it is (None: not known)."""

    body: dict[str, Any]
    owner: str | None


def owner_unknown(video_id: str) -> HTTPError:
    return HTTPError(
        503,
        "UNAVAILABLE",
        f"the status of video {video_id!r} cannot be read now; try again",
        {"Retry-After": str(UNKNOWN_OWNER_RETRY)},
        reason="STATUS_UNAVAILABLE",
    )


def visible(seen: Seen, video_id: str, caller: Caller) -> dict[str, Any]:
    """The answer if ``caller`` may see it; else 404 (another user's video) or 503 (whose
    it is cannot be known now)."""
    if not caller.user:
        return seen.body
    if seen.owner is None:
        raise owner_unknown(video_id)
    if seen.owner != caller.user:
        raise video_not_found(video_id)
    return seen.body


class StatusReader:
    """The status answers of videos, as this gateway gives them."""

    def __init__(self, clients: ServiceClients, runner: Runner, last_known: LastKnown, origin: str) -> None:
        self.clients = clients
        self.runner = runner
        self.last_known = last_known
        self.origin = origin

    async def read(self, video_id: str, caller: Caller = OPERATOR) -> dict[str, Any]:
        """GET /api/video-status's answer for ``caller``. Never fails for an outage (a
        degraded answer instead), except that a signed-in user gets 503 when whose video it
        is cannot be known; raises ServiceRefused for a video that does not exist or an id
        the status service refuses."""
        return visible(await self.look(video_id), video_id, caller)

    async def look(self, video_id: str) -> Seen:
        """The answer and its owner, as an operator sees it."""
        waiting = self.runner.waiting(video_id)
        if waiting is not None:  # waiting for its turn in this gateway: nothing to read yet
            place, owner = waiting
            return Seen(queued_json(video_id, place), owner)
        try:
            answer = await self.clients.get_video(video_id)
        except BreakerOpen:
            answer = self.last_known.degraded(video_id, f"{SERVICE_DOWN} (breaker open)")
        except ServiceDown as exc:
            log.warning("status service not answering", extra={"video_id": video_id, "code": exc.code.name})
            answer = self.last_known.degraded(video_id, SERVICE_DOWN)
        except ServiceRefused as exc:
            if exc.not_found or exc.code.name == "INVALID_ARGUMENT":
                raise
            log.warning("status service refused a read", extra={"video_id": video_id, "error": exc.details})
            answer = self.last_known.degraded(video_id, SERVICE_DOWN)
        else:
            if answer.degraded:
                log.warning("status store degraded", extra={"video_id": video_id, "reason": answer.degraded_reason})
                answer.degraded_reason = STORE_DOWN
            else:
                self.last_known.remember(answer)
        return Seen(status_json(answer, self.origin), self.owner_of(answer))

    def written(self, video: status_pb2.Video) -> None:
        """This process wrote the video: what the write answered is what is known of it."""
        self.last_known.remember(status_pb2.GetVideoResponse(video=video))

    def shape(self, video: status_pb2.Video) -> Seen:
        """A write's answer (the video as the status service just stored it)."""
        return Seen(status_json(status_pb2.GetVideoResponse(video=video), self.origin), video.owner)

    def owner_of(self, answer: status_pb2.GetVideoResponse) -> str | None:
        """Whose video the answer is about; None when nothing says (a degraded answer for a
        video neither the status store nor this gateway knows)."""
        if answer.degraded and not answer.video.owner and not answer.video.updated_at_ms:
            return None
        return answer.video.owner

    async def prompts(self, video_id: str, caller: Caller) -> list[tuple[int, str]]:
        """The scenes' prompts as the video's latest run was started, for the caller's page:
        none when the status service cannot say (the page fills in as answers come)."""
        try:
            answer = await self.clients.get_video(video_id)
        except (ServiceDown, ServiceRefused):
            return []
        if answer.degraded or (caller.user and answer.video.owner != caller.user):
            return []
        return [(p.scene, p.prompt) for p in answer.video.prompts]

    async def check_owner(self, video_id: str, caller: Caller) -> None:
        """Before a user's write: 404 for another user's video (a new id is fine). When the
        status service cannot say, the start itself is checked there (StartVideo)."""
        if not caller.user:
            return
        try:
            answer = await self.clients.get_video(video_id)
        except ServiceRefused as exc:
            if exc.not_found:
                return
            raise
        except ServiceDown:
            return
        video = answer.video
        if not answer.degraded and video.owner != caller.user and (video.owner or video.updated_at_ms):
            raise video_not_found(video_id)
