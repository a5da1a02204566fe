"""ImageGenService: protobuf in, plain Python to the chain, protobuf out."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from services.common import validation
from services.common.deadlines import Deadline
from services.common.errors import InvalidArgument
from services.common.pages import page
from services.common.rpc import rpc, stream_rpc
from services.common.wire import Codecs, ImageAnswer, encode_generate_answer
from services.imagegen.admission import VideoLanes
from services.imagegen.breaker import BreakerState
from services.imagegen.chain import ProviderChain
from services.imagegen.providers.base import ImageRequest, Outcome
from services.imagegen.replay import PaidImages, ReplayCache, ReplayKey
from services.imagegen.results import ChainResult, PartialImage
from services.imagegen.shared_replay import SharedReplay
from storyshort.imagegen.v1 import imagegen_pb2, imagegen_pb2_grpc

SERVICE = "storyshort.imagegen.v1.ImageGenService"
DEFAULT_SIZE = "1024x1024"
QUALITIES = ("", "low", "medium", "high", "auto")
MAX_VIDEO_PARALLELISM = 64
# Partial images kept for a caller that reads GenerateStream slowly (older ones dropped).
PARTIALS_QUEUED = 4

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


def _quality(value: str) -> str:
    if value not in QUALITIES:
        raise InvalidArgument(f"quality {value!r} is not one of low, medium, high, auto (or empty: the default)")
    return value


class ImageGenServicer(imagegen_pb2_grpc.ImageGenServiceServicer):
    # Generate's image goes to gRPC in one copy, not through a protobuf message.
    WIRE: Codecs = {"Generate": {"response_serializer": encode_generate_answer}}

    def __init__(
        self,
        chain: ProviderChain,
        deadline_seconds: float,
        replay: ReplayCache | None = None,
        shared_replay: SharedReplay | None = None,
    ) -> None:
        self.chain = chain
        self.deadline_seconds = deadline_seconds
        self.paid = PaidImages(replay or ReplayCache(0, 0), shared_replay, chain.policy.placeholder_reserve)
        self.lanes = VideoLanes()

    # Answers an ImageAnswer, which WIRE sends as GenerateResponse's very bytes.
    @rpc(SERVICE)
    async def Generate(  # type: ignore[override]
        self, request: imagegen_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> ImageAnswer:
        result = await self._answer(request, context)
        return ImageAnswer(result.image, answer_fields(result))

    @stream_rpc(SERVICE)
    async def GenerateStream(
        self, request: imagegen_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[imagegen_pb2.GenerateStreamResponse]:
        """Generate's answer, after the partial images the model sent while it made it."""
        frames: deque[PartialImage] = deque(maxlen=PARTIALS_QUEUED)  # a slow reader sees the latest
        ready = asyncio.Event()

        async def on_partial(frame: PartialImage) -> None:
            frames.append(frame)
            ready.set()

        answering = asyncio.ensure_future(self._answer(request, context, on_partial))
        answering.add_done_callback(lambda _done: ready.set())
        try:
            while True:
                await ready.wait()
                ready.clear()
                while frames:
                    frame = frames.popleft()
                    yield imagegen_pb2.GenerateStreamResponse(
                        partial=imagegen_pb2.PartialImage(
                            image=frame.image,
                            content_type=frame.info.content_type,
                            extension=frame.info.extension,
                            width=frame.info.width,
                            height=frame.info.height,
                            index=frame.index,
                            provider=frame.provider,
                        )
                    )
                if answering.done():
                    break
            result = answering.result()
        finally:
            answering.cancel()
        final = answer_fields(result)
        final.image = result.image
        yield imagegen_pb2.GenerateStreamResponse(final=final)

    async def _answer(
        self,
        request: imagegen_pb2.GenerateRequest,
        context: grpc.aio.ServicerContext,
        on_partial: Callable[[PartialImage], Awaitable[None]] | None = None,
    ) -> ChainResult:
        """Generate's work: checked at the edge, answered from what was already paid for,
        or from the chain (the placeholder last)."""
        prompt = validation.prompt(request.prompt)
        size = validation.image_size(request.size or DEFAULT_SIZE)
        if request.video_id:
            validation.video_id(request.video_id)
        if request.scene or request.video_id:
            validation.scene_number(request.scene)
        _quality(request.quality)
        if request.video_parallelism > MAX_VIDEO_PARALLELISM:
            raise InvalidArgument(f"video_parallelism must be at most {MAX_VIDEO_PARALLELISM}")
        if request.video_parallelism and not request.video_id:
            raise InvalidArgument("video_parallelism limits one video's requests: give its video_id too")
        deadline = Deadline.from_context(context, self.deadline_seconds)
        max_cost = request.max_cost_usd if request.HasField("max_cost_usd") else None
        if max_cost is not None and not math.isfinite(max_cost):
            raise InvalidArgument("max_cost_usd must be a finite number of US dollars")
        if len(request.variant) > 128:
            raise InvalidArgument("variant is longer than 128 characters")
        key = ReplayKey.of(request.video_id, request.scene, prompt, size, request.quality, request.variant)
        wanted = ImageRequest(prompt, size, request.quality, request.scene)

        async def generate(keep_late: Callable[[ChainResult], None]) -> ChainResult:
            with self.lanes.lane(request.video_id, request.video_parallelism) as lane:
                return await self.chain.generate(
                    wanted,
                    deadline,
                    context={"video_id": request.video_id, "scene": request.scene},
                    max_cost=max_cost,
                    lane=lane,
                    keep_late=keep_late,
                    on_partial=on_partial,
                )

        return await self.paid.answer(key, generate, deadline)

    @rpc(SERVICE)
    async def QuoteImage(
        self, request: imagegen_pb2.QuoteImageRequest, context: grpc.aio.ServicerContext
    ) -> imagegen_pb2.ImageQuote:
        size = validation.image_size(request.size or DEFAULT_SIZE)
        highest, unpriced = self.chain.quote(ImageRequest("", size, _quality(request.quality)))
        return imagegen_pb2.ImageQuote(max_usd=highest, unpriced=unpriced)

    @rpc(SERVICE)
    async def ListProviders(
        self, request: imagegen_pb2.ListProvidersRequest, context: grpc.aio.ServicerContext
    ) -> imagegen_pb2.ListProvidersResponse:
        states = []
        for slot in self.chain.slots:
            breaker = slot.breaker
            state = breaker.current_state()
            states.append(
                imagegen_pb2.ProviderState(
                    name=slot.name,
                    available=slot.available,
                    breaker_open=state is not BreakerState.CLOSED,
                    reason=slot.unavailable_reason or breaker.reason,
                    concurrency_limit=slot.concurrency,
                    kind=slot.provider.kind,
                    breaker_state=state.value,
                    retry_in_ms=int(breaker.seconds_left() * 1000),
                    consecutive_failures=breaker.failures,
                    attempt_timeout_s=slot.attempt_timeout,
                    model=slot.provider.model,
                    partial_images=slot.provider.partial_images,
                    streams=slot.provider.streams,
                )
            )
        states.append(
            imagegen_pb2.ProviderState(
                name=self.chain.placeholder.name, available=True, kind="placeholder", breaker_state="closed"
            )
        )
        chunk, token = page(states, request.page_size, request.page_token, default=len(states))
        return imagegen_pb2.ListProvidersResponse(providers=chunk, next_page_token=token)


def answer_fields(result: ChainResult) -> imagegen_pb2.GenerateResponse:
    """Everything of Generate's answer but the image itself."""
    return imagegen_pb2.GenerateResponse(
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
