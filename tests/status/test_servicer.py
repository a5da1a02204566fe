"""StatusService over gRPC: bad input is refused with INVALID_ARGUMENT and nothing is
written; a forbidden transition is FAILED_PRECONDITION; a store outage reads degraded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from services.common.server import Registration
from services.status.book import StatusBook
from services.status.servicer import SERVICE, StatusServicer
from services.status.stores.postgres import PostgresStore
from services.status.stores.sqlite import SQLiteStore
from storyshort.status.v1 import status_pb2, status_pb2_grpc
from tests.conftest import grpc_server
from tools.processes import free_port


@pytest.fixture
async def status(tmp_path: Path) -> AsyncIterator[tuple[status_pb2_grpc.StatusServiceStub, SQLiteStore]]:
    store = SQLiteStore(tmp_path / "s.db")
    await store.migrate()
    reg = Registration(status_pb2_grpc.add_StatusServiceServicer_to_server, StatusServicer(StatusBook(store)), SERVICE)
    async with grpc_server(reg) as (_running, channel):
        yield status_pb2_grpc.StatusServiceStub(channel), store
    await store.close()


BAD = [
    ("CreateVideo", status_pb2.CreateVideoRequest(video_id="", scene_count=1), "video_id is required"),
    ("CreateVideo", status_pb2.CreateVideoRequest(video_id="a/../b", scene_count=1), "may contain only"),
    ("CreateVideo", status_pb2.CreateVideoRequest(video_id="v", scene_count=-1), "scene_count"),
    ("StartVideo", status_pb2.StartVideoRequest(video_id="", scene_count=1), "video_id is required"),
    ("StartVideo", status_pb2.StartVideoRequest(video_id="v", scene_count=-1), "scene_count"),
    ("UpdateVideo", status_pb2.UpdateVideoRequest(video_id="v", status="rendering"), "unknown status 'rendering'"),
    ("UpdateVideo", status_pb2.UpdateVideoRequest(video_id="v", progress=101), "between 0 and 100"),
    ("UpdateVideo", status_pb2.UpdateVideoRequest(video_id="v", progress=-1), "between 0 and 100"),
    ("ReportScene", status_pb2.ReportSceneRequest(video_id="v"), "scene is required"),
    (
        "ReportScene",
        status_pb2.ReportSceneRequest(video_id="v", scene=status_pb2.SceneResult(scene=0, state="stored", url="u")),
        "1-based",
    ),
    (
        "ReportScene",
        status_pb2.ReportSceneRequest(
            video_id="v", scene=status_pb2.SceneResult(scene=10_001, state="stored", url="u")
        ),
        "from 1 to 10000",
    ),
    (
        "StartVideo",
        status_pb2.StartVideoRequest(
            video_id="v", scene_count=1, prompts=[status_pb2.ScenePrompt(scene=2_147_483_647, prompt="x")]
        ),
        "from 1 to 10000",
    ),
    (
        "ReportScene",
        status_pb2.ReportSceneRequest(video_id="v", scene=status_pb2.SceneResult(scene=1, state="done")),
        "state",
    ),
    (
        "ReportScene",
        status_pb2.ReportSceneRequest(video_id="v", scene=status_pb2.SceneResult(scene=1, state="stored")),
        "url",
    ),
    ("GetVideo", status_pb2.GetVideoRequest(video_id="x" * 200), "at most 128"),
    ("AdmitStart", status_pb2.AdmitStartRequest(video_id="v", scene_count=1), "owner is required"),
    ("ReportPreview", status_pb2.ReportPreviewRequest(video_id="v", scene=1), "url is required"),
    ("ReportPreview", status_pb2.ReportPreviewRequest(video_id="v", scene=0, url="u"), "1-based"),
    ("ReportPreview", status_pb2.ReportPreviewRequest(video_id="v", scene=1, url="u", index=-1), "index must be"),
    ("AdmitStart", status_pb2.AdmitStartRequest(video_id="v", scene_count=-1, owner="u"), "scene_count"),
    ("AdmitStart", status_pb2.AdmitStartRequest(video_id="a/b", scene_count=1, owner="u"), "may contain only"),
    (
        "ReportScene",
        status_pb2.ReportSceneRequest(
            video_id="v",
            scene=status_pb2.SceneResult(scene=1, state="stored", url="u"),
            then=status_pb2.UpdateVideoRequest(video_id="other", status="failed"),
        ),
        "then.video_id",
    ),
    (
        "ReportScene",
        status_pb2.ReportSceneRequest(
            video_id="v",
            scene=status_pb2.SceneResult(scene=1, state="stored", url="u"),
            then=status_pb2.UpdateVideoRequest(progress=101),
        ),
        "between 0 and 100",
    ),
    (
        "StartVideo",
        status_pb2.StartVideoRequest(video_id="v", scene_count=1, prompts=[status_pb2.ScenePrompt(scene=1, prompt="")]),
        "prompts: scene 1: prompt is empty",
    ),
    (
        "StartVideo",
        status_pb2.StartVideoRequest(
            video_id="v", scene_count=1, prompts=[status_pb2.ScenePrompt(scene=0, prompt="x")]
        ),
        "1-based",
    ),
    (
        "StartVideo",
        status_pb2.StartVideoRequest(
            video_id="v", scene_count=2, prompts=[status_pb2.ScenePrompt(scene=1, prompt="x")] * 2
        ),
        "scene 1 is given twice",
    ),
    (
        "ReportScene",
        status_pb2.ReportSceneRequest(
            video_id="v", scene=status_pb2.SceneResult(scene=1, state="stored", url="u"), settles="a b"
        ),
        "reservation_id must be 1-64 characters",
    ),
    *(
        ("ReserveSpend", status_pb2.ReserveSpendRequest(**fields), words)  # type: ignore[arg-type]
        for fields, words in [
            ({"video_id": "v", "usd": 0.04, "ttl_ms": 60_000}, "reservation_id must be 1-64 characters"),
            ({"reservation_id": "r" * 65, "video_id": "v", "usd": 0.04, "ttl_ms": 60_000}, "reservation_id"),
            ({"reservation_id": "r", "usd": 0.04, "ttl_ms": 60_000}, "video_id is required"),
            ({"reservation_id": "r", "video_id": "v", "usd": -1, "ttl_ms": 60_000}, "usd must be a finite amount"),
            ({"reservation_id": "r", "video_id": "v", "usd": float("nan"), "ttl_ms": 60_000}, "finite"),
            ({"reservation_id": "r", "video_id": "v", "usd": 0.04, "ttl_ms": 0}, "ttl_ms must be between 1000"),
            ({"reservation_id": "r", "video_id": "v", "usd": 0.04, "ttl_ms": 3_600_001}, "ttl_ms"),
            (
                {
                    "reservation_id": "r",
                    "video_id": "v",
                    "usd": 0.04,
                    "ttl_ms": 60_000,
                    "caps": status_pb2.SpendCaps(daily_usd=float("inf")),
                },
                "caps.daily_usd must be a finite amount",
            ),
            (
                {
                    "reservation_id": "r",
                    "video_id": "v",
                    "usd": 0.04,
                    "ttl_ms": 60_000,
                    "caps": status_pb2.SpendCaps(since_ms=-1),
                },
                "caps.since_ms",
            ),
        ]
    ),
    ("ReleaseSpend", status_pb2.ReleaseSpendRequest(reservation_id=""), "reservation_id must be"),
]


@pytest.mark.parametrize(("method", "request_", "words"), BAD, ids=[f"{m}-{i}" for i, (m, _r, _w) in enumerate(BAD)])
async def test_bad_input_is_invalid_argument_and_nothing_is_written(
    status: tuple[status_pb2_grpc.StatusServiceStub, SQLiteStore], method: str, request_: object, words: str
) -> None:
    stub, store = status
    await stub.CreateVideo(status_pb2.CreateVideoRequest(video_id="v", scene_count=2), timeout=5)
    before = await store.get("v")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(stub, method)(request_, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in (err.value.details() or "")
    assert await store.get("v") == before


async def test_forbidden_transition_is_failed_precondition(
    status: tuple[status_pb2_grpc.StatusServiceStub, SQLiteStore],
) -> None:
    stub, _store = status
    await stub.CreateVideo(status_pb2.CreateVideoRequest(video_id="v", scene_count=2), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UpdateVideo(status_pb2.UpdateVideoRequest(video_id="v", status="assets_generated"), timeout=5)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot move" in (err.value.details() or "")


async def test_start_creates_and_marks_generating_in_one_call_and_answers_stored_scenes(
    status: tuple[status_pb2_grpc.StatusServiceStub, SQLiteStore],
) -> None:
    stub, _store = status
    fresh = await stub.StartVideo(status_pb2.StartVideoRequest(video_id="new", scene_count=3), timeout=5)
    assert (fresh.status, fresh.scene_count, list(fresh.scenes)) == ("generating_images", 3, [])
    scene = status_pb2.SceneResult(scene=1, state="stored", url="http://x/1.png", provider="p")
    await stub.ReportScene(status_pb2.ReportSceneRequest(video_id="new", scene=scene), timeout=5)
    await stub.UpdateVideo(status_pb2.UpdateVideoRequest(video_id="new", status="failed", error="boom"), timeout=5)
    again = await stub.StartVideo(status_pb2.StartVideoRequest(video_id="new", scene_count=4), timeout=5)
    assert (again.status, again.scene_count, again.error) == ("generating_images", 4, "")
    assert [s.scene for s in again.scenes if s.state == "stored"] == [1]


async def test_a_report_can_carry_the_runs_end_in_the_same_call(
    status: tuple[status_pb2_grpc.StatusServiceStub, SQLiteStore],
) -> None:
    stub, _store = status
    await stub.StartVideo(status_pb2.StartVideoRequest(video_id="v", scene_count=1), timeout=5)
    end = status_pb2.UpdateVideoRequest(
        status="assets_generated", progress=100, summary=status_pb2.RunSummary(generated=1, elapsed_ms=42)
    )
    scene = status_pb2.SceneResult(scene=1, state="stored", url="http://x/1.png", provider="p")
    video = await stub.ReportScene(status_pb2.ReportSceneRequest(video_id="v", scene=scene, then=end), timeout=5)
    assert (video.status, video.progress, video.summary.generated, video.summary.elapsed_ms) == (
        "assets_generated",
        100,
        1,
        42,
    )
    assert [s.scene for s in video.scenes] == [1]


async def test_a_hold_is_released_by_the_report_of_the_scene_it_paid_for(
    status: tuple[status_pb2_grpc.StatusServiceStub, SQLiteStore],
) -> None:
    stub, _store = status
    await stub.StartVideo(status_pb2.StartVideoRequest(video_id="v", scene_count=2), timeout=5)
    caps = status_pb2.SpendCaps(daily_usd=0.10, since_ms=0)

    def reserve(rid: str) -> status_pb2.ReserveSpendRequest:
        return status_pb2.ReserveSpendRequest(reservation_id=rid, video_id="v", usd=0.06, caps=caps, ttl_ms=60_000)

    first = await stub.ReserveSpend(reserve("r1"), timeout=5)
    assert (first.granted_usd, first.cap, first.HasField("daily_left_usd")) == (0.06, "daily", True)
    assert not first.HasField("video_left_usd")  # no video cap given
    second = await stub.ReserveSpend(reserve("r2"), timeout=5)
    assert second.granted_usd == pytest.approx(0.04) and second.left_usd == pytest.approx(0.04)
    await stub.ReleaseSpend(status_pb2.ReleaseSpendRequest(reservation_id="r2"), timeout=5)
    # The image under r1 cost 0.05: recorded, and r1 released in the same call.
    scene = status_pb2.SceneResult(scene=1, state="stored", url="http://x/1.png", cost_usd=0.05, paid_at_ms=1)
    await stub.ReportScene(status_pb2.ReportSceneRequest(video_id="v", scene=scene, settles="r1"), timeout=5)
    gone = await stub.ReleaseSpend(status_pb2.ReleaseSpendRequest(reservation_id="r1"), timeout=5)
    assert not gone.released
    third = await stub.ReserveSpend(reserve("r3"), timeout=5)
    assert third.left_usd == pytest.approx(0.05) and third.granted_usd == pytest.approx(0.05)


async def test_get_answers_degraded_not_an_error_when_the_store_is_down() -> None:
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{free_port()}/x", connect_timeout=1)
    reg = Registration(
        status_pb2_grpc.add_StatusServiceServicer_to_server,
        StatusServicer(StatusBook(store, attempt_timeout=0.5)),
        SERVICE,
    )
    async with grpc_server(reg) as (_running, channel):
        stub = status_pb2_grpc.StatusServiceStub(channel)
        answer = await stub.GetVideo(status_pb2.GetVideoRequest(video_id="v"), timeout=3)
        assert answer.degraded and answer.video.status == "processing" and answer.degraded_reason
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.UpdateVideo(status_pb2.UpdateVideoRequest(video_id="v", progress=5), timeout=3)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    await store.close()
