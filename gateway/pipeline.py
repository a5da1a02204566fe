"""The per-video scene pipeline: scenes in parallel up to a limit, each one
generate -> upload -> record -> progress. One scene's failure never stops the others;
scenes that already have a real image are never generated (paid for) again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from gateway import metrics
from gateway.breakers import BreakerOpen, ServiceDown, ServiceError
from gateway.budget import BudgetGuard
from gateway.clients import ServiceClients
from gateway.spool import ImageSpool, Pending, SpooledImage
from services.common import validation
from services.common.images import inspect_image, render_placeholder
from services.common.objects import scene_object_path
from services.common.retry import retrying_within
from storyshort.imagegen.v1 import imagegen_pb2
from storyshort.status.v1 import status_pb2
from storyshort.storage.v1 import storage_pb2

log = logging.getLogger("pipeline")
# Seconds the end of a run keeps trying to record scene results and the final status.
END_OF_RUN_WRITES = 30.0


def _status_down(exc: BaseException) -> bool:
    return isinstance(exc, ServiceDown)


GATEWAY_PLACEHOLDER = "gateway-placeholder"


@dataclass(frozen=True)
class Scene:
    number: int  # 1-based
    prompt: str


@dataclass
class Summary:
    generated: int = 0
    placeholders: int = 0
    failed: int = 0
    skipped: int = 0
    hard_provider_failures: int = 0
    provider_attempts: int = 0
    elapsed_ms: int = 0
    spend_usd: float = 0.0
    unpriced_images: int = 0

    def to_pb(self) -> status_pb2.RunSummary:
        return status_pb2.RunSummary(
            generated=self.generated,
            placeholders=self.placeholders,
            failed=self.failed,
            hard_provider_failures=self.hard_provider_failures,
            provider_attempts=self.provider_attempts,
            elapsed_ms=self.elapsed_ms,
            spend_usd=self.spend_usd,
            unpriced_images=self.unpriced_images,
        )


@dataclass
class SceneOutcome:
    result: status_pb2.SceneResult
    reported: bool = False


class InFlight:
    """Calls under way, and a wait for the moment there are none."""

    def __init__(self) -> None:
        self._count = 0
        self._none = asyncio.Event()
        self._none.set()

    @contextlib.contextmanager
    def one(self) -> Iterator[None]:
        self._count += 1
        self._none.clear()
        try:
            yield
        finally:
            self._count -= 1
            if not self._count:
                self._none.set()

    async def idle(self) -> None:
        await self._none.wait()


@dataclass
class VideoRun:
    video_id: str
    scenes: list[Scene]
    summary: Summary = field(default_factory=Summary)
    outcomes: dict[int, SceneOutcome] = field(default_factory=dict)
    # What earlier runs of this video spent (from the status store).
    spent_before: float = 0.0
    started: float = 0.0  # time.monotonic() when the run began
    left: int = 0  # scenes of this run not finished yet
    # The final status, once recorded with the last scene's report.
    final: str | None = None
    reporting: InFlight = field(default_factory=InFlight)
    pending: Pending | None = None  # what earlier runs left in the spool, as prepare() found it
    queued: bool = False  # waiting for its turn to run (in-process admission)
    # Scenes stored as placeholders by earlier runs: a real image for one of them heals it.
    placeholders_before: set[int] = field(default_factory=set)

    @property
    def fingerprint(self) -> tuple[tuple[int, str], ...]:
        return tuple((s.number, s.prompt) for s in self.scenes)

    def scenes_where(self, predicate: Callable[[SceneOutcome], bool]) -> list[int]:
        return [n for n, o in sorted(self.outcomes.items()) if predicate(o)]


@dataclass(frozen=True)
class Stages:
    generating: asyncio.Semaphore
    storing: asyncio.Semaphore


def placeholder_reason(answer: imagegen_pb2.GenerateResponse) -> str:
    if any(a.reason.startswith("budget") for a in answer.attempts):
        return "budget"
    if not answer.attempts:
        return "no provider configured"
    return "every provider failed"


class Pipeline:
    def __init__(
        self, clients: ServiceClients, concurrency: int, image_size: str, spool: ImageSpool, budget: BudgetGuard
    ) -> None:
        self.budget = budget
        self.clients = clients
        self.concurrency = concurrency
        self.image_size = image_size
        self.spool = spool

    async def prepare(self, run: VideoRun) -> set[int]:
        """Mark the video generating; answer the scenes that already have a real image."""
        # What earlier runs left in the spool is listed meanwhile (a thread hop less later).
        stored, run.pending = await asyncio.gather(
            self.clients.start_video(run.video_id, {s.number: s.prompt for s in run.scenes}),
            self.spool.pending(run.video_id),
        )
        numbers = {s.number for s in run.scenes}
        run.spent_before = sum(s.cost_usd for s in stored.scenes)
        # Real images already stored are never paid for again; placeholders cost nothing
        # and are retried, since a resume is when the real image is wanted.
        done = {s.scene for s in stored.scenes if s.state == "stored" and not s.placeholder and s.scene in numbers}
        run.placeholders_before = {s.scene for s in stored.scenes if s.state == "stored" and s.placeholder}
        if done:
            log.info("resuming video", extra={"video_id": run.video_id, "already_stored": sorted(done)})
        return done

    async def run(self, run: VideoRun, done_scenes: set[int]) -> str:
        """Run the scenes not in ``done_scenes``; answer the final status."""
        run.started = time.monotonic()
        # Two stages, each bounded: generating (the paid, rate-limited part) and storing; a
        # scene that has its image frees its generation slot while it uploads and records.
        # imagegen keeps `concurrency` scenes of the video at the providers (its lane); as
        # many more wait there, ready, so a freed place is taken without a round trip back
        # here. Not under a spend cap: each scene's allowance must see what the one before
        # it spent.
        ahead = 0 if self.budget.active else self.concurrency
        stages = Stages(asyncio.Semaphore(self.concurrency + ahead), asyncio.Semaphore(self.concurrency))
        pending = run.pending or await self.spool.pending(run.video_id)
        done_scenes = done_scenes | await self._record_journaled(run, done_scenes, pending.results)
        todo = [s for s in run.scenes if s.number not in done_scenes]
        run.summary.skipped = len(run.scenes) - len(todo)
        run.left = len(todo)

        async def one(scene: Scene) -> None:
            try:
                await self._scene(run, scene, stages, scene.number in pending.images)
            except Exception:
                # A bug must not stop the other scenes, nor leave the video generating.
                log.exception("scene crashed", extra={"video_id": run.video_id, "scene": scene.number})
                if scene.number in run.outcomes:
                    return  # it crashed after its outcome was recorded
                run.summary.failed += 1
                await self._record(
                    run,
                    SceneOutcome(status_pb2.SceneResult(scene=scene.number, state="failed", error="internal error")),
                )

        await asyncio.gather(*(one(s) for s in todo))
        final = run.final or await self._end_run(run)
        s = run.summary
        metrics.record_run(final, s)
        log.info(
            "run summary",
            extra={
                "video_id": run.video_id,
                "final_status": final,
                "scenes": len(run.scenes),
                "generated": s.generated,
                "placeholders": s.placeholders,
                "failed": s.failed,
                "skipped_already_stored": s.skipped,
                "hard_provider_failures": s.hard_provider_failures,
                "provider_attempts": s.provider_attempts,
                "elapsed_ms": s.elapsed_ms,
            },
        )
        return final

    def _end(
        self, run: VideoRun, recorded_with: SceneOutcome | None = None
    ) -> tuple[str, status_pb2.UpdateVideoRequest]:
        """The run's final status, and the write that records it with the summary
        (``recorded_with``: the scene whose report will carry it)."""
        run.summary.elapsed_ms = int((time.monotonic() - run.started) * 1000)
        failed = run.scenes_where(lambda o: o.result.state == "failed")
        unrecorded = run.scenes_where(lambda o: not o.reported and o is not recorded_with)
        final = "failed" if failed or unrecorded else "assets_generated"
        problems = []
        if failed:
            problems.append(f"scenes {', '.join(map(str, failed))} could not be stored")
        if unrecorded:
            problems.append(f"results of scenes {', '.join(map(str, unrecorded))} could not be recorded")
        return final, status_pb2.UpdateVideoRequest(
            video_id=run.video_id,
            status=final,
            error="; ".join(problems),
            summary=run.summary.to_pb(),
            **({"progress": 100} if final == "assets_generated" else {}),
        )

    async def _end_run(self, run: VideoRun) -> str:
        """Record what the status service missed, then the final status (bounded in time)."""
        await self._flush_unreported(run)
        for number in run.scenes_where(lambda o: not o.reported):  # a resume records these, not pays again
            await self.spool.put_result(run.video_id, number, run.outcomes[number].result.SerializeToString())
        final, end = self._end(run)
        try:
            async for attempt in retrying_within(END_OF_RUN_WRITES, _status_down):
                with attempt:
                    await self.clients.update_video(end)
        except ServiceError as exc:
            log.error("could not record the final status", extra={"video_id": run.video_id, "error": exc.details})
        return final

    async def _record(self, run: VideoRun, outcome: SceneOutcome) -> None:
        """Report a finished scene. The run's last one carries the run's end in the same
        call when every other scene is recorded: one status write fewer before the video
        reads as done."""
        run.outcomes[outcome.result.scene] = outcome
        run.left -= 1
        if not run.left:
            await run.reporting.idle()  # the other scenes' reports have answered
        if run.left or not all(o.reported for o in run.outcomes.values() if o is not outcome):
            with run.reporting.one():
                await self._report(run.video_id, outcome)
            return
        final, end = self._end(run, recorded_with=outcome)
        if await self._report(run.video_id, outcome, then=end):
            run.final = final

    async def _scene(self, run: VideoRun, scene: Scene, stages: Stages, spooled: bool) -> None:
        ctx = {"video_id": run.video_id, "scene": scene.number}
        async with stages.generating:
            t0 = time.monotonic()
            # An image paid for in an earlier run whose upload failed is used, not bought again.
            image = await self.spool.take(run.video_id, scene.number) if spooled else None
            if image is not None:
                log.info("uploading the image kept from an earlier run", extra=ctx)
            else:
                image = await self._generate(run, scene)
            generate_ms = int((time.monotonic() - t0) * 1000)
        async with stages.storing:
            await self._store(run, scene, image, generate_ms)

    async def _store(self, run: VideoRun, scene: Scene, image: SpooledImage, generate_ms: int) -> None:
        ctx = {"video_id": run.video_id, "scene": scene.number}
        t1 = time.monotonic()
        result = status_pb2.SceneResult(
            scene=scene.number,
            provider=image.provider,
            placeholder=image.placeholder,
            attempts=image.attempts,
            generate_ms=generate_ms,
            content_type=image.content_type,
            cost_usd=image.cost_usd,
            cost_known=image.cost_known,
            paid_at_ms=image.paid_at_ms,
            error=image.reason,  # for a stored placeholder: why it is one
        )
        try:
            uploaded = await self.clients.upload(
                storage_pb2.UploadRequest(
                    path=scene_object_path(run.video_id, scene.number, image.extension),
                    data=image.data,
                    content_type=image.content_type,
                )
            )
            result.state, result.url, result.path = "stored", uploaded.public_url, uploaded.path
            if image.placeholder:
                run.summary.placeholders += 1
            else:
                run.summary.generated += 1
                if scene.number in run.placeholders_before:
                    metrics.PLACEHOLDERS_HEALED.inc()
                    log.info("placeholder healed", extra={**ctx, "provider": image.provider, "url": result.url})
            await self.spool.drop(run.video_id, scene.number)
        except ServiceError as exc:
            result.state, result.error = "failed", f"upload failed: {exc.code.name}: {exc.details}"
            run.summary.failed += 1
            log.error("scene could not be stored", extra={**ctx, "error": result.error})
            if not image.placeholder:
                await self.spool.put(run.video_id, scene.number, image)
        result.upload_ms = int((time.monotonic() - t1) * 1000)
        await self._record(run, SceneOutcome(result))

    async def _generate(self, run: VideoRun, scene: Scene) -> SpooledImage:
        try:
            request = imagegen_pb2.GenerateRequest(
                prompt=scene.prompt,
                size=self.image_size,
                video_id=run.video_id,
                scene=scene.number,
                video_parallelism=self.concurrency,
            )
            allowance = await self.budget.allowance(run.video_id, run.spent_before + run.summary.spend_usd)
            if allowance is not None:
                request.max_cost_usd = max(allowance.usd, 0.0)
            answer = await self.clients.generate(request)
            for attempt in answer.attempts:
                if attempt.outcome == imagegen_pb2.ATTEMPT_OUTCOME_HARD_FAILURE:
                    run.summary.hard_provider_failures += 1
                if attempt.outcome != imagegen_pb2.ATTEMPT_OUTCOME_SKIPPED:
                    run.summary.provider_attempts += 1
            run.summary.spend_usd += answer.cost_usd
            self.budget.spent(answer.cost_usd)
            paid = not answer.placeholder
            reason = placeholder_reason(answer) if answer.placeholder else ""
            if reason == "budget" and allowance is not None:
                self.budget.refused(allowance)
            if paid and not answer.cost_known:
                run.summary.unpriced_images += 1
            return SpooledImage(
                answer.image,
                answer.content_type,
                answer.extension,
                answer.provider,
                answer.placeholder,
                len(answer.attempts),
                cost_usd=answer.cost_usd,
                cost_known=answer.cost_known,
                paid_at_ms=int(time.time() * 1000) if paid else 0,
                reason=reason,
            )
        except ServiceError as exc:
            # imagegen down or out of time: the scene still gets an image.
            why = str(exc) if isinstance(exc, BreakerOpen) else exc.code.name
            log.warning(
                "imagegen failed; using the gateway's placeholder",
                extra={"video_id": run.video_id, "scene": scene.number, "code": why},
            )
            width, height = validation.image_size(self.image_size)
            data = await asyncio.to_thread(render_placeholder, width, height, f"Scene {scene.number}")
            info = inspect_image(data)
            return SpooledImage(
                data, info.content_type, info.extension, GATEWAY_PLACEHOLDER, True, 0, reason="imagegen unavailable"
            )

    async def _report(
        self, video_id: str, outcome: SceneOutcome, then: status_pb2.UpdateVideoRequest | None = None
    ) -> bool:
        try:
            await self.clients.report_scene(
                status_pb2.ReportSceneRequest(video_id=video_id, scene=outcome.result, then=then)
            )
            outcome.reported = True
        except ServiceError as exc:
            log.warning(
                "could not record scene; will try again at the end of the run",
                extra={"video_id": video_id, "scene": outcome.result.scene, "code": exc.code.name},
            )
        return outcome.reported

    async def _record_journaled(self, run: VideoRun, done: set[int], journaled: dict[int, bytes]) -> set[int]:
        """Record scenes an earlier run stored but could not record; answer those recorded."""
        recorded: set[int] = set()
        wanted = {s.number for s in run.scenes} - done
        for number, raw in sorted(journaled.items()):
            if number not in wanted:
                continue
            result = status_pb2.SceneResult.FromString(raw)
            try:
                await self.clients.report_scene(status_pb2.ReportSceneRequest(video_id=run.video_id, scene=result))
            except ServiceError:
                continue
            await self.spool.drop_result(run.video_id, number)
            if result.state == "stored" and not result.placeholder:
                recorded.add(number)
                run.summary.generated += 1
        return recorded

    async def _flush_unreported(self, run: VideoRun) -> None:
        """Scene results the status service missed during the run are sent again, for a
        bounded time: a stored scene that is not recorded would be generated (paid for)
        again by a resume."""
        pending = [o for o in run.outcomes.values() if not o.reported]
        if not pending:
            return
        try:
            async for attempt in retrying_within(END_OF_RUN_WRITES, _status_down):
                with attempt:
                    for outcome in pending:
                        if not outcome.reported:
                            await self.clients.report_scene(
                                status_pb2.ReportSceneRequest(video_id=run.video_id, scene=outcome.result)
                            )
                            outcome.reported = True
        except ServiceError as exc:
            log.error(
                "scene results could not be recorded; a resume will redo those scenes",
                extra={
                    "video_id": run.video_id,
                    "scenes": [o.result.scene for o in pending if not o.reported],
                    "code": exc.code.name,
                },
            )
