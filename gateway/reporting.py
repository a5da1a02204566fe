"""Reporting a run to the status service: each scene's result as it finishes (the last one
carrying the run's end), what the service missed sent again at the end for a bounded time,
and what still could not be recorded kept in the spool's journal for the next run."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

from gateway import metrics
from gateway.clients import ServiceClients
from gateway.errors import CallFailed, is_down
from gateway.spool import ImageSpool
from gateway.video_run import SceneOutcome, VideoRun
from gateway.vocabulary import DONE, FAILED, SCENE_FAILED, SCENE_STORED
from services.common.retry import retrying_within
from storyshort.status.v1 import status_pb2

log = logging.getLogger("pipeline")
# Seconds the end of a run keeps trying to record scene results and the final status.
END_OF_RUN_WRITES = 30.0


class RunReporter:
    def __init__(self, clients: ServiceClients, spool: ImageSpool, flush_within: float = END_OF_RUN_WRITES) -> None:
        self.clients = clients
        self.spool = spool
        self.flush_within = flush_within

    def end(
        self, run: VideoRun, recorded_with: SceneOutcome | None = None
    ) -> tuple[str, status_pb2.UpdateVideoRequest]:
        """The run's final status, and the write that records it with the summary
        (``recorded_with``: the scene whose report will carry it)."""
        run.summary.elapsed_ms = int((time.monotonic() - run.started) * 1000)
        failed = run.scenes_where(lambda o: o.result.state == SCENE_FAILED)
        unrecorded = run.scenes_where(lambda o: not o.reported and o is not recorded_with)
        final = FAILED if failed or unrecorded else DONE
        problems = []
        if failed:
            problems.append(f"scenes {', '.join(map(str, failed))} could not be stored")
        if unrecorded:
            problems.append(f"results of scenes {', '.join(map(str, unrecorded))} could not be recorded")
        return final, status_pb2.UpdateVideoRequest(
            video_id=run.video_id,
            status=final,
            error="; ".join(problems),
            summary=status_pb2.RunSummary(**asdict(run.summary)),
            **({"progress": 100} if final == DONE else {}),
        )

    async def end_run(self, run: VideoRun) -> str:
        """Record what the status service missed, then the final status (bounded in time)."""
        await self._flush_unreported(run)
        for number in run.scenes_where(lambda o: not o.reported):  # a resume records these, not pays again
            await self.spool.put_result(run.video_id, number, run.outcomes[number].result.SerializeToString())
            metrics.RESULTS.labels("journaled").inc()
        final, end = self.end(run)
        try:
            async for attempt in retrying_within(self.flush_within, is_down):
                with attempt:
                    await self.clients.update_video(end)
        except CallFailed as exc:
            log.error("could not record the final status", extra={"video_id": run.video_id, "error": exc.details})
        return final

    async def record(self, run: VideoRun, outcome: SceneOutcome) -> None:
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
        final, end = self.end(run, recorded_with=outcome)
        if await self._report(run.video_id, outcome, then=end):
            run.final = final

    async def _report(
        self, video_id: str, outcome: SceneOutcome, then: status_pb2.UpdateVideoRequest | None = None
    ) -> bool:
        try:
            await self.clients.report_scene(
                status_pb2.ReportSceneRequest(
                    video_id=video_id, scene=outcome.result, then=then, settles=outcome.settles
                )
            )
            outcome.reported = True
            metrics.RESULTS.labels("recorded").inc()
        except CallFailed as exc:
            metrics.RESULTS.labels("deferred").inc()
            log.warning(
                "could not record scene; will try again at the end of the run",
                extra={"video_id": video_id, "scene": outcome.result.scene, "code": exc.code.name},
            )
        return outcome.reported

    async def record_journaled(self, run: VideoRun, done: set[int], journaled: dict[int, bytes]) -> set[int]:
        """Record scenes an earlier run stored but could not record; answer those recorded."""
        recorded: set[int] = set()
        wanted = {s.number for s in run.scenes} - done
        for number, raw in sorted(journaled.items()):
            if number not in wanted:
                continue
            result = status_pb2.SceneResult.FromString(raw)
            try:
                await self.clients.report_scene(status_pb2.ReportSceneRequest(video_id=run.video_id, scene=result))
            except CallFailed:
                continue
            await self.spool.drop_result(run.video_id, number)
            metrics.RESULTS.labels("recorded_from_journal").inc()
            if result.state == SCENE_STORED and not result.placeholder:
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
            async for attempt in retrying_within(self.flush_within, is_down):
                with attempt:
                    for outcome in pending:
                        if not outcome.reported:
                            await self.clients.report_scene(
                                status_pb2.ReportSceneRequest(
                                    video_id=run.video_id, scene=outcome.result, settles=outcome.settles
                                )
                            )
                            outcome.reported = True
                            metrics.RESULTS.labels("recorded_at_end").inc()
        except CallFailed as exc:
            log.error(
                "scene results could not be recorded; a resume will redo those scenes",
                extra={
                    "video_id": run.video_id,
                    "scenes": [o.result.scene for o in pending if not o.reported],
                    "code": exc.code.name,
                },
            )
