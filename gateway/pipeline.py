"""The per-video scene pipeline: scenes in parallel up to a limit, each one
generate -> upload -> record -> progress. One scene's failure never stops the others;
scenes that already have a real image are never generated (paid for) again."""

from __future__ import annotations

import asyncio
import logging
import time

from gateway import metrics
from gateway.budget import BudgetGuard
from gateway.clients import ServiceClients
from gateway.errors import CallFailed, ServiceRefused, is_down
from gateway.generating import SceneImages
from gateway.reporting import END_OF_RUN_WRITES, RunReporter
from gateway.spool import ImageSpool, SpooledImage
from gateway.video_run import Scene, SceneOutcome, Stages, VideoRun
from gateway.vocabulary import FAILED, SCENE_FAILED, SCENE_STORED
from services.common.images import reencode_below
from services.common.objects import ObjectKeys, scene_object_path
from services.common.retry import retrying_within
from storyshort.status.v1 import status_pb2
from storyshort.storage.v1 import storage_pb2

log = logging.getLogger("pipeline")
# Re-encodes of an image that storage refuses as too large, each half the bytes of the last.
REENCODE_TRIES = 4


class Pipeline:
    def __init__(
        self,
        clients: ServiceClients,
        concurrency: int,
        image_size: str,
        spool: ImageSpool,
        budget: BudgetGuard,
        keys: ObjectKeys,
        user_limits: status_pb2.UserLimits | None = None,
        flush_within: float = END_OF_RUN_WRITES,
    ) -> None:
        self.keys = keys
        self.images = SceneImages(clients, budget, keys, concurrency, image_size)
        self.user_limits = user_limits
        self.budget = budget
        self.clients = clients
        self.concurrency = concurrency
        self.image_size = image_size
        self.spool = spool
        self.reporter = RunReporter(clients, spool, flush_within)

    async def admit(self, run: VideoRun) -> None:
        """A signed-in user's start that will wait its turn: checked and counted against
        their limits now, as a start that runs at once is (prepare then counts it no more)."""
        if run.owner:
            await self.clients.admit_start(run.video_id, len(run.scenes), run.owner, self.user_limits)
            run.counted = True

    async def refused(self, run: VideoRun, reason: str) -> None:
        """A start that could not begin ends visibly: the video marked failed, with why."""
        end = status_pb2.UpdateVideoRequest(video_id=run.video_id, status=FAILED, error=reason)
        try:
            async for attempt in retrying_within(self.reporter.flush_within, is_down):
                with attempt:
                    await self.clients.update_video(end)
        except CallFailed as exc:
            log.error("could not record that the start failed", extra={"video_id": run.video_id, "error": exc.details})

    async def prepare(self, run: VideoRun, *, count_start: bool = True) -> set[int]:
        """Mark the video generating; answer the scenes that already have a real image. A
        signed-in user's start counts against their limits (``count_start``: not when a
        queue worker takes up a start the gateway already counted)."""
        limits = self.user_limits if run.owner and count_start and not run.counted else None
        # What earlier runs left in the spool is listed meanwhile, not after.
        stored, run.pending = await asyncio.gather(
            self.clients.start_video(run.video_id, {s.number: s.prompt for s in run.scenes}, run.owner, limits),
            self.spool.pending(run.video_id),
        )
        prompts = {s.number: s.prompt for s in run.scenes}
        run.spent_before = sum(s.cost_usd for s in stored.scenes)
        # Real images already stored for the same prompt are never paid for again (an image
        # recorded before prompts were kept counts as the same); placeholders cost nothing
        # and are retried, since a resume is when the real image is wanted. A regenerated
        # scene is made again; its real image is kept should the new one be a placeholder.
        real = {
            s.scene: s
            for s in stored.scenes
            if s.state == SCENE_STORED
            and not s.placeholder
            and s.scene in prompts
            and s.prompt in ("", prompts[s.scene])
        }
        run.kept = {n: result for n, result in real.items() if n in run.regenerate}
        done = set(real) - run.regenerate
        run.placeholders_before = {s.scene for s in stored.scenes if s.state == SCENE_STORED and s.placeholder}
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
        done_scenes = done_scenes | await self.reporter.record_journaled(run, done_scenes, pending.results)
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
                await self.reporter.record(
                    run,
                    SceneOutcome(
                        status_pb2.SceneResult(scene=scene.number, state=SCENE_FAILED, error="internal error")
                    ),
                )

        await asyncio.gather(*(one(s) for s in todo))
        final = run.final or await self.reporter.end_run(run)
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

    async def _scene(self, run: VideoRun, scene: Scene, stages: Stages, spooled: bool) -> None:
        ctx = {"video_id": run.video_id, "scene": scene.number}
        async with stages.generating:
            t0 = time.monotonic()
            # An image paid for in an earlier run whose upload failed is used, not bought again.
            image = await self.spool.take(run.video_id, scene.number) if spooled else None
            if image is not None:
                log.info("uploading the image kept from an earlier run", extra=ctx)
            else:
                image = await self.images.image(run, scene)
            generate_ms = int((time.monotonic() - t0) * 1000)
        async with stages.storing:
            await self._store(run, scene, image, generate_ms)

    async def _store(self, run: VideoRun, scene: Scene, image: SpooledImage, generate_ms: int) -> None:
        ctx = {"video_id": run.video_id, "scene": scene.number}
        kept = run.kept.get(scene.number)
        if image.placeholder and kept is not None:
            log.warning("regenerate got a placeholder; the real image is kept", extra={**ctx, "reason": image.reason})
            run.summary.placeholders += 1
            await self.reporter.record(run, SceneOutcome(kept))  # a placeholder: its hold is released
            return
        t1 = time.monotonic()
        result = status_pb2.SceneResult(
            scene=scene.number,
            prompt=scene.prompt,
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
            uploaded = await self._upload(run, scene, image, result)
            result.state, result.url, result.path = "stored", uploaded.public_url, uploaded.path
            if image.placeholder:
                run.summary.placeholders += 1
            else:
                run.summary.generated += 1
                if scene.number in run.placeholders_before:
                    metrics.PLACEHOLDERS_HEALED.inc()
                    log.info("placeholder healed", extra={**ctx, "provider": image.provider, "url": result.url})
            await self.spool.drop(run.video_id, scene.number)
        except CallFailed as exc:
            result.state, result.error = SCENE_FAILED, f"upload failed: {exc.code.name}: {exc.details}"
            run.summary.failed += 1
            log.error("scene could not be stored", extra={**ctx, "error": result.error})
            if not image.placeholder:
                await self.spool.put(run.video_id, scene.number, image)
        result.upload_ms = int((time.monotonic() - t1) * 1000)
        await self.reporter.record(run, SceneOutcome(result, settles=image.hold))

    async def _upload(
        self, run: VideoRun, scene: Scene, image: SpooledImage, result: status_pb2.SceneResult
    ) -> storage_pb2.UploadResponse:
        """Upload the scene's image. One that storage refuses as too large for the bucket is
        re-encoded (same pixel size, WebP or JPEG) to half the bytes, then half again, and
        sent again (at most REENCODE_TRIES times): every scene can finish."""
        data, content_type, extension = image.data, image.content_type, image.extension
        for tries_left in range(REENCODE_TRIES, -1, -1):
            try:
                path = scene_object_path(run.video_id, scene.number, extension, self.keys.of(run.video_id))
                return await self.clients.upload(path, data, content_type)
            except ServiceRefused as exc:
                if not tries_left or not exc.too_large:
                    raise
                smaller = await asyncio.to_thread(reencode_below, image.data, len(data) // 2)
                if smaller is None:
                    raise
                data, info = smaller
                content_type, extension = info.content_type, info.extension
                result.reencoded, result.content_type = True, content_type
                metrics.REENCODED.inc()
                log.warning(
                    "storage refused the image as too large; re-encoded to fit",
                    extra={"video_id": run.video_id, "scene": scene.number, "bytes": len(data), "format": extension},
                )
        raise AssertionError("unreachable: the last try raises or answers")
