"""A start's scenes: from the request body, or, when it gives none, the prompts the video's
latest run was started with."""

from __future__ import annotations

from gateway.auth import OPERATOR, Caller
from gateway.clients import ServiceClients
from gateway.errors import CallFailed, HTTPError, ServiceRefused
from gateway.schemas import GenerateIn
from gateway.video_run import Scene
from services.common import validation
from services.common.errors import InvalidArgument


def parse_scenes(body: GenerateIn, max_scenes: int) -> list[Scene]:
    if not body.scenes:
        raise InvalidArgument(
            "scenes is empty; give at least one scene with a prompt", field="scenes", reason="SCENES_EMPTY"
        )
    if len(body.scenes) > max_scenes:
        raise InvalidArgument(
            f"{len(body.scenes)} scenes given; at most {max_scenes} are allowed per video",
            field="scenes",
            reason="TOO_MANY_SCENES",
        )
    scenes: list[Scene] = []
    for position, scene in enumerate(body.scenes):
        number = validation.scene_number(position + 1 if scene.index is None else scene.index + 1)
        try:
            scenes.append(Scene(number, validation.prompt(scene.prompt)))
        except InvalidArgument as exc:
            # The rule's own reason, and where in the body it was broken.
            raise InvalidArgument(
                f"scene {number}: {exc}", field=f"scenes[{position}].prompt", reason=exc.reason
            ) from exc
    numbers = [s.number for s in scenes]
    if len(set(numbers)) != len(numbers):
        raise InvalidArgument(
            "two scenes have the same index; each index may appear once", field="scenes", reason="SCENE_INDEX_REPEATED"
        )
    return scenes


async def regenerated_scenes(
    clients: ServiceClients, video_id: str, number: int, prompt: str | None, caller: Caller = OPERATOR
) -> list[Scene]:
    """The video's stored prompts with scene ``number`` given its new prompt (if any). 404
    for a video or a scene that does not exist."""
    if prompt is not None:
        try:
            prompt = validation.prompt(prompt)
        except InvalidArgument as exc:
            raise InvalidArgument(f"prompt: {exc}", field="prompt", reason=exc.reason) from exc
    try:
        scenes = await stored_scenes(clients, video_id, caller)
    except InvalidArgument as exc:
        raise HTTPError(404, "NOT_FOUND", f"video {video_id!r} has no scenes to regenerate; post its scenes") from exc
    numbers = [s.number for s in scenes]
    if number not in numbers:
        raise HTTPError(
            404, "NOT_FOUND", f"video {video_id!r} has no scene {number}; its scenes are {min(numbers)}-{max(numbers)}"
        )
    return [Scene(s.number, prompt) if s.number == number and prompt is not None else s for s in scenes]


async def stored_scenes(clients: ServiceClients, video_id: str, caller: Caller = OPERATOR) -> list[Scene]:
    """A resume without scenes: the prompts the video's latest run was started with. Another
    user's video is answered as one that does not exist."""
    try:
        answer = await clients.get_video(video_id)
    except CallFailed as exc:
        if isinstance(exc, ServiceRefused) and exc.not_found:
            raise InvalidArgument(
                f"scenes is empty and there is no video {video_id!r} to resume; give its scenes"
            ) from exc
        raise HTTPError(
            503, "UNAVAILABLE", "the stored prompts cannot be read now; try again, or give the scenes"
        ) from exc
    if answer.degraded:
        raise HTTPError(503, "UNAVAILABLE", "the stored prompts cannot be read now; try again, or give the scenes")
    if caller.user and answer.video.owner != caller.user:
        raise InvalidArgument(f"scenes is empty and there is no video {video_id!r} to resume; give its scenes")
    if not answer.video.prompts:
        raise InvalidArgument(f"scenes is empty and video {video_id!r} has no stored prompts; give its scenes")
    return [Scene(p.scene, p.prompt) for p in answer.video.prompts]
