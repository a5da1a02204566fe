"""ImageGenService: protobuf in, plain Python to the chain, protobuf out."""

from __future__ import annotations

import asyncio
import math

import grpc

from services.common import validation
from services.common.deadlines import Budget
from services.common.errors import InvalidArgument
from services.common.rpc import rpc
from services.imagegen import metrics
from services.imagegen.admission import VideoLanes
from services.imagegen.chain import AttemptRecord, ChainResult, ProviderChain
from services.imagegen.providers.base import Outcome
from services.imagegen.replay import ReplayCache, ReplayKey
from storyshort.imagegen.v1 import imagegen_pb2, imagegen_pb2_grpc

SERVICE = "storyshort.imagegen.v1.ImageGenService"
DEFAULT_SIZE = "1024x1024"
QUALITIES = ("", "low", "medium", "high", "auto")
MAX_VIDEO_PARALLELISM = 64

OUTCOMES = {
    Outcome.SUCCESS: imagegen_pb2.ATTEMPT_OUTCOME_SUCCESS,
    Outcome.HARD_FAILURE: imagegen_pb2.ATTEMPT_OUTCOME_HARD_FAILURE,
    Outcome.CONTENT_POLICY: imagegen_pb2.ATTEMPT_OUTCOME_CONTENT_POLICY,
    Outcome.RATE_LIMITED: imagegen_pb2.ATTEMPT_OUTCOME_RATE_LIMITED,
    Outcome.TRANSIENT: imagegen_pb2.ATTEMPT_OUTCOME_TRANSIENT,
    Outcome.TIMEOUT: imagegen_pb2.ATTEMPT_OUTCOME_TIMEOUT,
    Outcome.INVALID_IMAGE: imagegen_pb2.ATTEMPT_OUTCOME_INVALID_IMAGE,
    Outcome.SKIPPED: imagegen_pb2.ATTEMPT_OUTCOME_SKIPPED,
}


class ImageGenServicer(imagegen_pb2_grpc.ImageGenServiceServicer):
    def __init__(self, chain: ProviderChain, budget_seconds: float, replay: ReplayCache | None = None) -> None:
        self.chain = chain
        self.budget_seconds = budget_seconds
        self.replay = replay or ReplayCache(0, 0)
        self.lanes = VideoLanes()
        self._inflight: set[asyncio.Task[ChainResult]] = set()

    def _keep(self, key: ReplayKey | None, done: asyncio.Task[ChainResult]) -> None:
        self._inflight.discard(done)
        if not done.cancelled() and done.exception() is None:
            self.replay.put(key, done.result())

    @rpc(SERVICE)
    async def Generate(
        self, request: imagegen_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> imagegen_pb2.GenerateResponse:
        prompt = validation.prompt(request.prompt)
        size = validation.image_size(request.size or DEFAULT_SIZE)
        if request.video_id:
            validation.video_id(request.video_id)
        if request.scene or request.video_id:
            validation.scene_number(request.scene)
        if request.quality not in QUALITIES:
            raise InvalidArgument(f"quality {request.quality!r} is not one of low, medium, high, auto")
        if request.video_parallelism > MAX_VIDEO_PARALLELISM:
            raise InvalidArgument(f"video_parallelism must be at most {MAX_VIDEO_PARALLELISM}")
        if request.video_parallelism and not request.video_id:
            raise InvalidArgument("video_parallelism limits one video's requests: give its video_id too")
        budget = Budget.from_context(context, self.budget_seconds)
        max_cost = request.max_cost_usd if request.HasField("max_cost_usd") else None
        if max_cost is not None and not math.isfinite(max_cost):
            raise InvalidArgument("max_cost_usd must be a finite number of US dollars")
        key = ReplayKey.of(request.video_id, request.scene, prompt, size, request.quality)
        replayed = self.replay.get(key)
        if replayed is not None:
            # Already paid for: answered again at no cost (the caller retried the scene).
            metrics.REPLAYS.inc()
            # Its cost is reported again: the run that paid never got to record it.
            paid = next((a for a in replayed.attempts if a.outcome is Outcome.SUCCESS), None)
            record = AttemptRecord(
                replayed.provider,
                Outcome.SKIPPED,
                "replayed: this image was already paid for",
                0,
                paid.usage if paid else None,
                paid.cost if paid else 0.0,
            )
            result = ChainResult(replayed.image, replayed.info, replayed.provider, False, [record])
        else:
            # A provider charges for an image even when our caller goes away, so the attempt
            # is not cancelled with the call: it finishes (inside its own budget) and its
            # image waits in the replay cache for the caller's retry.
            work = asyncio.create_task(
                self._generate(request, prompt, size, budget, max_cost), name=f"generate-{request.video_id}"
            )
            self._inflight.add(work)
            work.add_done_callback(lambda done: self._keep(key, done))
            try:
                result = await asyncio.shield(work)
            except asyncio.CancelledError:
                if not budget.started:  # still waiting its turn: nothing is paid for yet
                    work.cancel()
                raise
        return imagegen_pb2.GenerateResponse(
            image=result.image,
            content_type=result.info.content_type,
            extension=result.info.extension,
            width=result.info.width,
            height=result.info.height,
            provider=result.provider,
            placeholder=result.placeholder,
            attempts=[
                imagegen_pb2.Attempt(
                    provider=a.provider,
                    outcome=OUTCOMES[a.outcome],
                    reason=a.reason,
                    duration_ms=a.ms,
                    input_tokens=a.usage.input_tokens if a.usage else 0,
                    output_tokens=a.usage.output_tokens if a.usage else 0,
                    cost_usd=a.cost or 0.0,
                    cost_known=a.cost is not None,
                )
                for a in result.attempts
            ],
            cost_usd=result.cost,
            cost_known=result.cost_known,
        )

    async def _generate(
        self,
        request: imagegen_pb2.GenerateRequest,
        prompt: str,
        size: tuple[int, int],
        budget: Budget,
        max_cost: float | None,
    ) -> ChainResult:
        with self.lanes.lane(request.video_id, request.video_parallelism) as lane:
            return await self.chain.generate(
                prompt,
                size,
                request.quality,
                budget,
                context={"video_id": request.video_id, "scene": request.scene},
                max_cost=max_cost,
                lane=lane,
            )

    @rpc(SERVICE)
    async def ListProviders(
        self, request: imagegen_pb2.ListProvidersRequest, context: grpc.aio.ServicerContext
    ) -> imagegen_pb2.ListProvidersResponse:
        states = [
            imagegen_pb2.ProviderState(
                name=slot.name,
                available=slot.available,
                breaker_open=slot.breaker.is_open(),
                reason=slot.unavailable_reason or slot.breaker.reason,
                concurrency_limit=slot.concurrency,
            )
            for slot in self.chain.slots
        ]
        states.append(imagegen_pb2.ProviderState(name=self.chain.placeholder.name, available=True))
        return imagegen_pb2.ListProvidersResponse(providers=states)
