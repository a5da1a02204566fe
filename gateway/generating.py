"""One scene's image from imagegen, one job per step: hold what it may cost under the caps,
ask imagegen (GenerateStream: the partial images it sends become the scene's preview as
they come), count what the run spent and tried, settle the hold, and when imagegen cannot
answer, make the scene's placeholder here."""

from __future__ import annotations

import asyncio
import logging
import time

from gateway import metrics
from gateway.budget import Allowance, BudgetGuard
from gateway.clients import ServiceClients
from gateway.errors import BreakerOpen, CallFailed, ServiceDown
from gateway.spool import SpooledImage
from gateway.video_run import GATEWAY_PLACEHOLDER, Scene, VideoRun, placeholder_reason
from services.common import validation
from services.common.images import inspect_image, render_placeholder
from services.common.objects import ObjectKeys, preview_object_path
from services.common.wire import ImageAnswer
from storyshort.imagegen.v1 import imagegen_pb2

log = logging.getLogger("pipeline")
# Longest one preview's upload and record may hold up the scene (a preview is best effort).
PREVIEW_WITHIN = 5.0


class SceneImages:
    def __init__(
        self, clients: ServiceClients, budget: BudgetGuard, keys: ObjectKeys, concurrency: int, image_size: str
    ) -> None:
        self.clients = clients
        self.budget = budget
        self.keys = keys
        self.concurrency = concurrency
        self.image_size = image_size

    async def image(self, run: VideoRun, scene: Scene) -> SpooledImage:
        """The scene's image: imagegen's (a real one or its placeholder), or, when imagegen
        cannot answer, the gateway's own placeholder. Never raises for a service's trouble."""
        try:
            allowance = await self.budget.reserve(
                run.video_id, run.spent_before + run.summary.spend_usd, run.owner, self.image_size
            )
            answer = await self._ask(run, scene, allowance)
        except CallFailed as exc:
            return await self._placeholder(run, scene, exc)
        self._tally(run, answer.meta)
        return await self._settle(run, answer, allowance)

    async def _ask(self, run: VideoRun, scene: Scene, allowance: Allowance | None) -> ImageAnswer:
        request = imagegen_pb2.GenerateRequest(
            prompt=scene.prompt,
            size=self.image_size,
            video_id=run.video_id,
            scene=scene.number,
            video_parallelism=self.concurrency,
            variant=run.variant if scene.number in run.regenerate else "",
        )
        if allowance is not None:
            request.max_cost_usd = max(allowance.usd, 0.0)
        answer: ImageAnswer | None = None
        try:
            async for frame in self.clients.generate_stream(request):
                if isinstance(frame, ImageAnswer):
                    answer = frame
                else:
                    await self._preview(run, scene, frame)
        except BreakerOpen:
            await self.budget.release(allowance)  # never sent: nothing paid
            raise
        # Any other failure (a deadline, a lost connection) may come after imagegen paid for
        # the image: the hold stays until its ttl, so the cap counts it meanwhile.
        if answer is None:
            raise ServiceDown("imagegen", BreakerOpen.CODE, "the answer ended before its image")
        return answer

    async def _preview(self, run: VideoRun, scene: Scene, partial: imagegen_pb2.PartialImage) -> None:
        """A partial image: stored as the scene's preview object and recorded with the
        scene, once (best effort, bounded: a preview never holds the scene up for long)."""
        path = preview_object_path(run.video_id, scene.number, partial.extension, self.keys.of(run.video_id))
        try:
            async with asyncio.timeout(PREVIEW_WITHIN):
                stored = await self.clients.upload(path, partial.image, partial.content_type)
                await self.clients.report_preview(run.video_id, scene.number, stored.public_url, partial.index)
        except (CallFailed, TimeoutError) as exc:
            metrics.PREVIEWS.labels("dropped").inc()
            why = exc.code.name if isinstance(exc, CallFailed) else "timeout"
            log.warning(
                "a preview could not be shown", extra={"video_id": run.video_id, "scene": scene.number, "why": why}
            )
            return
        metrics.PREVIEWS.labels("shown").inc()

    @staticmethod
    def _tally(run: VideoRun, meta: imagegen_pb2.GenerateResponse) -> None:
        """What the run tried and spent."""
        for attempt in meta.attempts:
            if attempt.outcome == imagegen_pb2.ATTEMPT_OUTCOME_HARD_FAILURE:
                run.summary.hard_provider_failures += 1
            if attempt.outcome != imagegen_pb2.ATTEMPT_OUTCOME_SKIPPED:
                run.summary.provider_attempts += 1
        run.summary.spend_usd += meta.cost_usd
        if not meta.placeholder and not meta.cost_known:
            run.summary.unpriced_images += 1

    async def _settle(self, run: VideoRun, answer: ImageAnswer, allowance: Allowance | None) -> SpooledImage:
        """The answer as the scene's image; the hold is kept for the scene's report when
        the image was paid for, dropped now when it was not."""
        meta = answer.meta
        self.budget.spent(meta.cost_usd, run.owner)
        paid = not meta.placeholder
        reason = placeholder_reason(meta) if meta.placeholder else ""
        if reason == "budget" and allowance is not None:
            self.budget.refused(allowance)
        if not paid:
            await self.budget.release(allowance)
        return SpooledImage(
            answer.image,
            meta.content_type,
            meta.extension,
            meta.provider,
            meta.placeholder,
            len(meta.attempts),
            cost_usd=meta.cost_usd,
            cost_known=meta.cost_known,
            paid_at_ms=int(time.time() * 1000) if paid else 0,
            reason=reason,
            hold=allowance.hold if paid and allowance is not None else "",  # released by the scene's report
        )

    async def _placeholder(self, run: VideoRun, scene: Scene, exc: CallFailed) -> SpooledImage:
        """imagegen down or out of time: the scene still gets an image, made here."""
        why = str(exc) if isinstance(exc, BreakerOpen) else exc.code.name
        log.warning(
            "imagegen failed; using the gateway's placeholder",
            extra={"video_id": run.video_id, "scene": scene.number, "code": why},
        )
        width, height = validation.image_size(self.image_size)
        note = "Placeholder: the image service could not be reached"
        data = await asyncio.to_thread(render_placeholder, width, height, scene.number, scene.prompt, note)
        info = inspect_image(data)
        return SpooledImage(
            data, info.content_type, info.extension, GATEWAY_PLACEHOLDER, True, 0, reason="imagegen unavailable"
        )
