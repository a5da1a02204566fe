"""The scene pipeline and its reporting against an in-memory stand-in for the three
services (milliseconds, no processes): what the four-process tests check through logs,
checked directly on the calls the pipeline makes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import grpc
import pytest

from gateway.budget import BudgetGuard
from gateway.clients import ServiceClients
from gateway.errors import ServiceDown, ServiceRefused
from gateway.pipeline import Pipeline
from gateway.spool import ImageSpool
from gateway.video_run import GATEWAY_PLACEHOLDER, Scene, VideoRun
from services.common.objects import ObjectKeys
from services.common.wire import Image, ImageAnswer
from storyshort.imagegen.v1 import imagegen_pb2
from storyshort.status.v1 import status_pb2
from storyshort.storage.v1 import storage_pb2

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@dataclass
class StandInServices:
    """The calls ServiceClients makes, answered from memory; faults switched by the test."""

    stored: list[status_pb2.SceneResult] = field(default_factory=list)  # what StartVideo finds
    generated: list[int] = field(default_factory=list)
    uploads: list[str] = field(default_factory=list)
    reports: list[status_pb2.ReportSceneRequest] = field(default_factory=list)
    updates: list[status_pb2.UpdateVideoRequest] = field(default_factory=list)
    imagegen_down: bool = False
    storage_refuses: bool = False
    status_down_for: int = 0  # the next N status writes fail as a dead service does
    partials: int = 0  # partial images imagegen sends before each answer
    previews: list[tuple[int, str, int]] = field(default_factory=list)

    async def start_video(
        self,
        video_id: str,
        prompts: dict[int, str],
        owner: str = "",
        limits: status_pb2.UserLimits | None = None,
    ) -> status_pb2.Video:
        return status_pb2.Video(video_id=video_id, status="generating_images", scenes=self.stored)

    async def generate_stream(
        self, request: imagegen_pb2.GenerateRequest
    ) -> AsyncIterator[imagegen_pb2.PartialImage | ImageAnswer]:
        if self.imagegen_down:
            raise ServiceDown("imagegen", grpc.StatusCode.UNAVAILABLE, "connection refused")
        self.generated.append(request.scene)
        for index in range(self.partials):
            yield imagegen_pb2.PartialImage(
                image=PNG, content_type="image/png", extension="png", index=index, provider="m"
            )
        meta = imagegen_pb2.GenerateResponse(
            content_type="image/png", extension="png", provider="m", cost_usd=0.01, cost_known=True
        )
        yield ImageAnswer(memoryview(PNG), meta)

    async def report_preview(self, video_id: str, scene: int, url: str, index: int) -> status_pb2.Video:
        self._status_write()
        self.previews.append((scene, url, index))
        return status_pb2.Video(video_id=video_id)

    async def upload(self, path: str, data: Image, content_type: str) -> storage_pb2.UploadResponse:
        if self.storage_refuses:
            raise ServiceRefused("storage", grpc.StatusCode.RESOURCE_EXHAUSTED, "object too large")
        self.uploads.append(path)
        return storage_pb2.UploadResponse(path=path, public_url=f"http://x/{path}?v=1")

    def _status_write(self) -> None:
        if self.status_down_for:
            self.status_down_for -= 1
            raise ServiceDown("status", grpc.StatusCode.DEADLINE_EXCEEDED, "no answer")

    async def report_scene(self, request: status_pb2.ReportSceneRequest) -> status_pb2.Video:
        self._status_write()
        self.reports.append(request)
        return status_pb2.Video(video_id=request.video_id)

    async def update_video(self, request: status_pb2.UpdateVideoRequest) -> status_pb2.Video:
        self._status_write()
        self.updates.append(request)
        return status_pb2.Video(video_id=request.video_id)


KEY = ObjectKeys(b"test-object-key-secret").of("v1")


def pipeline(services: StandInServices, tmp_path: Path, flush_within: float = 10.0) -> Pipeline:
    clients = cast(ServiceClients, services)
    keys = ObjectKeys(b"test-object-key-secret")
    spool = ImageSpool(tmp_path / "spool")
    return Pipeline(clients, 3, "64x64", spool, BudgetGuard(clients, None, None), keys, flush_within=flush_within)


async def run_video(
    services: StandInServices, tmp_path: Path, n: int = 4, flush_within: float = 10.0
) -> tuple[VideoRun, str]:
    run = VideoRun("v1", [Scene(i, f"scene {i}") for i in range(1, n + 1)])
    pipe = pipeline(services, tmp_path, flush_within)
    done = await pipe.prepare(run)
    return run, await pipe.run(run, done)


async def test_a_healthy_run_reports_each_scene_once_and_the_last_carries_the_end(tmp_path: Path) -> None:
    services = StandInServices()
    _run, final = await run_video(services, tmp_path)
    assert final == "assets_generated"
    assert sorted(r.scene.scene for r in services.reports) == [1, 2, 3, 4]
    ends = [r for r in services.reports if r.HasField("then")]
    assert len(ends) == 1 and ends[0].then.status == "assets_generated" and ends[0].then.progress == 100
    assert ends[0].then.summary.generated == 4 and ends[0].then.summary.spend_usd == pytest.approx(0.04)
    assert services.updates == []  # the end rode on the last report: no write of its own
    key = ObjectKeys(b"test-object-key-secret").of("v1")
    assert key == KEY
    assert sorted(services.uploads) == [f"videos/v1/{key}/scene-{i}.png" for i in range(1, 5)]
    assert len(key) == 26 and key != ObjectKeys(b"another-object-key-secret").of("v1")


async def test_scenes_with_a_real_image_are_not_generated_again(tmp_path: Path) -> None:
    real = status_pb2.SceneResult(scene=2, state="stored", url="u", placeholder=False)
    placeholder = status_pb2.SceneResult(scene=3, state="stored", url="u", placeholder=True)
    services = StandInServices(stored=[real, placeholder])
    run, final = await run_video(services, tmp_path)
    assert final == "assets_generated"
    assert sorted(services.generated) == [1, 3, 4]  # the placeholder scene is generated again
    assert run.summary.skipped == 1


async def test_imagegen_down_gives_every_scene_the_gateways_placeholder(tmp_path: Path) -> None:
    services = StandInServices(imagegen_down=True)
    run, final = await run_video(services, tmp_path, n=2)
    assert final == "assets_generated"
    results = [r.scene for r in services.reports]
    assert {(r.provider, r.placeholder, r.error) for r in results} == {
        (GATEWAY_PLACEHOLDER, True, "imagegen unavailable")
    }
    assert run.summary.placeholders == 2


async def test_storage_refusing_fails_the_scene_and_keeps_the_paid_image_for_a_resume(tmp_path: Path) -> None:
    services = StandInServices(storage_refuses=True)
    _run, final = await run_video(services, tmp_path, n=2)
    assert final == "failed"
    assert all(r.scene.state == "failed" and "RESOURCE_EXHAUSTED" in r.scene.error for r in services.reports)
    pending = await ImageSpool(tmp_path / "spool").pending("v1")
    assert pending.images == {1, 2}  # paid for: a resume uploads them instead of paying again
    services.storage_refuses = False
    _run, final = await run_video(services, tmp_path, n=2)
    assert final == "assets_generated" and sorted(services.generated) == [1, 2]  # not generated twice


async def test_reports_the_status_service_missed_are_sent_again_at_the_end(tmp_path: Path) -> None:
    services = StandInServices(status_down_for=3)  # the first three reports fail
    run, final = await run_video(services, tmp_path)
    assert final == "assets_generated"
    assert sorted(r.scene.scene for r in services.reports) == [1, 2, 3, 4]  # every scene recorded once
    assert [u.status for u in services.updates] == ["assets_generated"]  # the end written on its own
    assert all(o.reported for o in run.outcomes.values())


async def test_reports_still_missed_after_the_flush_window_are_journaled_for_a_resume(tmp_path: Path) -> None:
    # The status service stays down: the end-of-run writes give up after the run's window
    # (STATUS_FLUSH_WITHIN, here 0.5 s; the default is 30 s) and the results wait in the
    # spool, so a resume records them instead of paying for the images again.
    services = StandInServices(status_down_for=1_000_000)
    async with asyncio.timeout(15):  # far inside the 30 s default: the window given was used
        _run, final = await run_video(services, tmp_path, n=2, flush_within=0.5)
    assert final == "failed"
    assert services.reports == [] and services.updates == []
    pending = await ImageSpool(tmp_path / "spool").pending("v1")
    assert sorted(pending.results) == [1, 2]


async def test_each_partial_is_the_scenes_preview_once_before_its_image(tmp_path: Path) -> None:
    services = StandInServices(partials=2)
    _run, final = await run_video(services, tmp_path, n=3)
    assert final == "assets_generated"
    expected = [(n, f"http://x/videos/v1/{KEY}/preview-{n}.png?v=1", i) for n in (1, 2, 3) for i in (0, 1)]
    assert sorted(services.previews) == expected
    preview_uploads = [u for u in services.uploads if "/preview-" in u]
    assert len(preview_uploads) == 6, "one upload per partial, no more"
    for scene in (1, 2, 3):  # each scene's previews were recorded before its result
        last_preview = max(i for i, p in enumerate(services.uploads) if p.endswith(f"preview-{scene}.png"))
        image = services.uploads.index(f"videos/v1/{KEY}/scene-{scene}.png")
        assert last_preview < image


async def test_a_preview_that_cannot_be_recorded_never_stops_its_scene(tmp_path: Path) -> None:
    services = StandInServices(partials=1, status_down_for=1)  # the first status write is a preview's
    _run, final = await run_video(services, tmp_path, n=1)
    assert final == "assets_generated"
    assert [r.scene.state for r in services.reports] == ["stored"]
