"""StatusService: protobuf in, plain Python to the book, protobuf out."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import grpc

from services.common import validation
from services.common.deadlines import Deadline
from services.common.errors import InvalidArgument
from services.common.pages import page
from services.common.rpc import rpc
from services.common.validation import SCENE_MAX
from services.common.video import check_scene_count, cut_error, scene_from_pb, update_values, video_to_pb
from services.status.book import StatusBook
from services.status.model import (
    SCENE_STATES,
    HoldRequest,
    SpendCaps,
    UserLimits,
    VideoUpdate,
)
from storyshort.status.v1 import status_pb2, status_pb2_grpc

SERVICE = "storyshort.status.v1.StatusService"
# Own budget per call: 3 store attempts of up to 5 s plus backoff.
CALL_BUDGET = 16.0
# A partial image's index (the API sends at most 3 per image; a few chains' worth).
PREVIEW_INDEX_MAX = 100
URL_MAX = 2_048
OWNER_MAX = 256
RESERVATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
HOLD_TTL_MS = (1_000, 3_600_000)


def _prompts(given: Iterable[status_pb2.ScenePrompt]) -> dict[int, str]:
    prompts: dict[int, str] = {}
    for item in given:
        scene = validation.scene_number(item.scene)
        if scene in prompts:
            raise InvalidArgument(f"prompts: scene {scene} is given twice")
        try:
            prompts[scene] = validation.prompt(item.prompt)
        except InvalidArgument as exc:
            raise InvalidArgument(f"prompts: scene {scene}: {exc}") from exc
    if len(prompts) > SCENE_MAX:
        raise InvalidArgument(f"prompts: at most {SCENE_MAX} scenes; got {len(prompts)}")
    return prompts


def _owner(value: str) -> str:
    if len(value) > OWNER_MAX or any(ord(c) < 32 for c in value):
        raise InvalidArgument(f"owner must be at most {OWNER_MAX} printable characters", field="owner")
    return value


def _usd(value: float, name: str) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise InvalidArgument(f"{name} must be a finite amount of 0 or more (USD); got {value}", field=name)
    return value


def _reservation_id(value: str) -> str:
    if not RESERVATION_ID.fullmatch(value):
        raise InvalidArgument(
            "reservation_id must be 1-64 characters of A-Z a-z 0-9 _ - (the caller chooses it, for example a uuid4)",
            field="reservation_id",
        )
    return value


def _hold(request: status_pb2.ReserveSpendRequest) -> HoldRequest:
    caps = request.caps
    if caps.since_ms < 0:
        raise InvalidArgument(f"caps.since_ms must be 0 or more (ms since the epoch); got {caps.since_ms}")
    low, high = HOLD_TTL_MS
    if not low <= request.ttl_ms <= high:
        raise InvalidArgument(f"ttl_ms must be between {low} and {high}; got {request.ttl_ms}", field="ttl_ms")
    return HoldRequest(
        reservation_id=_reservation_id(request.reservation_id),
        video_id=validation.video_id(request.video_id),
        owner=_owner(request.owner),
        usd=_usd(request.usd, "usd"),
        caps=SpendCaps(
            daily_usd=_usd(caps.daily_usd, "caps.daily_usd") if caps.HasField("daily_usd") else None,
            video_usd=_usd(caps.video_usd, "caps.video_usd") if caps.HasField("video_usd") else None,
            owner_usd=_usd(caps.owner_usd, "caps.owner_usd") if caps.HasField("owner_usd") else None,
            since_ms=caps.since_ms,
        ),
        ttl_ms=request.ttl_ms,
    )


def _change(request: status_pb2.UpdateVideoRequest) -> VideoUpdate:
    """The fields of an UpdateVideo that are set, checked (the video's table says which may
    be set and how each is checked: services/common/video.py)."""
    return VideoUpdate(**update_values(request))


class StatusServicer(status_pb2_grpc.StatusServiceServicer):
    def __init__(self, book: StatusBook) -> None:
        self.book = book

    @rpc(SERVICE)
    async def CreateVideo(
        self, request: status_pb2.CreateVideoRequest, context: grpc.aio.ServicerContext
    ) -> status_pb2.Video:
        video_id = validation.video_id(request.video_id)
        video = await self.book.create(
            video_id, check_scene_count(request.scene_count), Deadline.from_context(context, CALL_BUDGET)
        )
        return video_to_pb(video)

    @rpc(SERVICE)
    async def StartVideo(
        self, request: status_pb2.StartVideoRequest, context: grpc.aio.ServicerContext
    ) -> status_pb2.Video:
        video_id = validation.video_id(request.video_id)
        video = await self.book.start(
            video_id,
            check_scene_count(request.scene_count),
            Deadline.from_context(context, CALL_BUDGET),
            _prompts(request.prompts),
            owner=_owner(request.owner),
            limits=UserLimits(request.limits.videos_per_hour, request.limits.scenes_per_day),
        )
        return video_to_pb(video)

    @rpc(SERVICE)
    async def AdmitStart(
        self, request: status_pb2.AdmitStartRequest, context: grpc.aio.ServicerContext
    ) -> status_pb2.Video:
        video_id = validation.video_id(request.video_id)
        owner = _owner(request.owner)
        if not owner:
            raise InvalidArgument("owner is required: an operator's start is not counted", field="owner")
        video = await self.book.admit(
            video_id,
            check_scene_count(request.scene_count),
            Deadline.from_context(context, CALL_BUDGET),
            owner,
            UserLimits(request.limits.videos_per_hour, request.limits.scenes_per_day),
        )
        return video_to_pb(video)

    @rpc(SERVICE)
    async def GetVideo(
        self, request: status_pb2.GetVideoRequest, context: grpc.aio.ServicerContext
    ) -> status_pb2.GetVideoResponse:
        video_id = validation.video_id(request.video_id)
        answer = await self.book.get(video_id, Deadline.from_context(context, CALL_BUDGET))
        return status_pb2.GetVideoResponse(
            video=video_to_pb(answer.video),
            degraded=answer.degraded,
            age_ms=answer.age_ms,
            degraded_reason=answer.reason,
            stalled=answer.stalled,
        )

    @rpc(SERVICE)
    async def UpdateVideo(
        self, request: status_pb2.UpdateVideoRequest, context: grpc.aio.ServicerContext
    ) -> status_pb2.Video:
        video_id = validation.video_id(request.video_id)
        video = await self.book.update(video_id, _change(request), Deadline.from_context(context, CALL_BUDGET))
        return video_to_pb(video)

    @rpc(SERVICE)
    async def ReportScene(
        self, request: status_pb2.ReportSceneRequest, context: grpc.aio.ServicerContext
    ) -> status_pb2.Video:
        video_id = validation.video_id(request.video_id)
        if not request.HasField("scene"):
            raise InvalidArgument("scene is required")
        scene = scene_from_pb(request.scene)
        validation.scene_number(scene.scene)
        if scene.state not in SCENE_STATES:
            raise InvalidArgument(f"scene state {scene.state!r} is not one of {', '.join(SCENE_STATES)}")
        if scene.state == "stored" and not scene.url:
            raise InvalidArgument("a stored scene needs its url")
        if len(scene.url) > URL_MAX or len(scene.path) > URL_MAX:
            raise InvalidArgument(f"url and path must be at most {URL_MAX} characters")
        scene.error = cut_error(scene.error)
        scene.preview_url, scene.preview_index = "", 0  # a result ends the scene's preview
        _usd(scene.cost_usd, "cost_usd")
        then = None
        if request.HasField("then"):
            if request.then.video_id not in ("", video_id):
                raise InvalidArgument("then.video_id must be empty or the same video_id")
            then = _change(request.then)
        settles = _reservation_id(request.settles) if request.settles else ""
        video = await self.book.report_scene(
            video_id, scene, Deadline.from_context(context, CALL_BUDGET), then, settles=settles
        )
        return video_to_pb(video)

    @rpc(SERVICE)
    async def ReportPreview(
        self, request: status_pb2.ReportPreviewRequest, context: grpc.aio.ServicerContext
    ) -> status_pb2.Video:
        video_id = validation.video_id(request.video_id)
        scene = validation.scene_number(request.scene)
        if not request.url or len(request.url) > URL_MAX:
            raise InvalidArgument(f"url is required, at most {URL_MAX} characters", field="url")
        if not 0 <= request.index <= PREVIEW_INDEX_MAX:
            raise InvalidArgument(f"index must be from 0 to {PREVIEW_INDEX_MAX}; got {request.index}", field="index")
        video = await self.book.report_preview(
            video_id, scene, request.url, request.index, Deadline.from_context(context, CALL_BUDGET)
        )
        return video_to_pb(video)

    @rpc(SERVICE)
    async def GetSpend(
        self, request: status_pb2.GetSpendRequest, context: grpc.aio.ServicerContext
    ) -> status_pb2.Spend:
        if request.since_ms < 0:
            raise InvalidArgument(f"since_ms must be 0 or more (milliseconds since the epoch); got {request.since_ms}")
        spend = await self.book.spend_since(
            request.since_ms, Deadline.from_context(context, CALL_BUDGET), _owner(request.owner)
        )
        return status_pb2.Spend(usd=spend.usd, unpriced_images=spend.unpriced_images)

    @rpc(SERVICE)
    async def ReserveSpend(
        self, request: status_pb2.ReserveSpendRequest, context: grpc.aio.ServicerContext
    ) -> status_pb2.SpendReservation:
        hold = await self.book.reserve_spend(_hold(request), Deadline.from_context(context, CALL_BUDGET))
        return status_pb2.SpendReservation(
            reservation_id=hold.reservation_id,
            granted_usd=hold.granted_usd,
            cap=hold.cap,
            left_usd=hold.left_usd,
            **{f"{cap}_left_usd": room for cap, room in hold.rooms.items()},
        )

    @rpc(SERVICE)
    async def ReleaseSpend(
        self, request: status_pb2.ReleaseSpendRequest, context: grpc.aio.ServicerContext
    ) -> status_pb2.ReleaseSpendResponse:
        rid = _reservation_id(request.reservation_id)
        released = await self.book.release_spend(rid, Deadline.from_context(context, CALL_BUDGET))
        return status_pb2.ReleaseSpendResponse(released=released)

    @rpc(SERVICE)
    async def ListStalledVideos(
        self, request: status_pb2.ListStalledVideosRequest, context: grpc.aio.ServicerContext
    ) -> status_pb2.ListStalledVideosResponse:
        videos = await self.book.list_stalled(Deadline.from_context(context, CALL_BUDGET))
        videos.sort(key=lambda v: v.video_id)  # a stable order, so pages do not overlap
        chunk, token = page(videos, request.page_size, request.page_token, default=100)
        return status_pb2.ListStalledVideosResponse(videos=[video_to_pb(v) for v in chunk], next_page_token=token)
