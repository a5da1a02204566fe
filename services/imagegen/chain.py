"""The provider chain: ordered providers, each attempt with a fair share of the time left
before the deadline, a reserve kept so the placeholder always fits, breakers and per-provider limits
shared by every caller, and one retry policy in one place.

Fair share: a model gets at most what is left (less the placeholder reserve) divided by
the models still to try that would not be skipped, capped by the model's own timeout, so a
hanging model always leaves the ones after it their turn. The share covers the wait for a
place at the provider too (requests left to finish late may still hold its places), and the
wait ends at once when the model's breaker opens. A call holds its video's lane from its
first attempt to its answer, never longer: a late request holds no lane. A transient
failure moves to the next model at once; the same model is asked again only when it is the
last one left.

No paid image is wasted: when the chain stops waiting for an attempt, the request goes on
until the model's own timeout. While the call is in the chain, its image answers the call if
it comes before the next model's (or, every model tried, before the placeholder's reserve).
After that it goes on in the background (a bounded number of them at once), and an image that
arrives late is handed to ``keep_late`` (the replay cache) for its scene.

(Over 300 lines: fair share, retries, admission, late requests, the budget skip and the
quote are one policy about one attempt and its price, and read best together.)"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from services.common.deadlines import Deadline
from services.common.images import PLACEHOLDER_NOTE, ImageInfo, InvalidImage, check_image
from services.imagegen import metrics
from services.imagegen.admission import NO_ROOM, take_place
from services.imagegen.breaker import Pass
from services.imagegen.call import Call, ChainPolicy, ProviderSlot
from services.imagegen.late import Earlier, LateRequests, Work, arrived, first_image
from services.imagegen.prices import PriceTable
from services.imagegen.providers.base import (
    SEND_GATE,
    ImageRequest,
    Outcome,
    Partial,
    ProviderFailure,
    ProviderImage,
    SendGate,
    Usage,
    billed_partials,
)
from services.imagegen.providers.placeholder import PlaceholderProvider
from services.imagegen.results import AttemptRecord, ChainResult, PartialImage
from services.imagegen.shared_breaker import SharedBreakers

log = logging.getLogger(__name__)
NO_TIME = "not enough time left before the deadline"
# Below a millionth of a cent, a price and what is left under a cap are equal: sums of
# float prices drift (0.2 - 0.12 - 0.04 < 0.04), and an image that exactly fits must go.
COST_SLACK = 1e-9


class ProviderChain:
    def __init__(
        self,
        slots: list[ProviderSlot],
        placeholder: PlaceholderProvider,
        policy: ChainPolicy,
        prices: PriceTable | None = None,
        shared_breakers: SharedBreakers | None = None,
    ) -> None:
        self.slots = slots
        self.shared_breakers = shared_breakers
        self.placeholder = placeholder
        self.policy = policy
        self.prices = prices or PriceTable({})
        self._late = LateRequests(policy.late_max)
        self._background: set[asyncio.Future[None]] = set()

    async def generate(
        self,
        request: ImageRequest,
        deadline: Deadline,
        *,
        context: dict[str, object],
        max_cost: float | None = None,
        lane: asyncio.Semaphore | None = None,
        keep_late: Callable[[ChainResult], None] | None = None,
        on_partial: Callable[[PartialImage], Awaitable[None]] | None = None,
    ) -> ChainResult:
        """The first provider's image, or the next one's, or the placeholder. ``lane`` limits
        how many requests of this call's video are at the providers at once; ``on_partial``
        gets the partial images of models that stream, each checked, while the chain waits
        for them (a late request's partials are dropped)."""
        call = Call(request, deadline, context, max_cost, lane, keep_late, on_partial=on_partial)
        try:
            for index, slot in enumerate(self.slots):
                skip = self._skip_reason(slot, call, count=True)
                granted = Pass(False)
                if not skip:
                    granted = await self._ask(slot)
                    skip = granted.reason
                if skip:
                    self._record(call, slot.name, Outcome.SKIPPED, skip, time.monotonic())
                    continue
                result = await self._try_provider(index, slot, granted, call)
                if result is not None:
                    return result
                metrics.FALLBACKS.labels(slot.name, call.attempts[-1].outcome.value).inc()
            # Every model tried: a request still going on may answer in the time that is left.
            until = time.monotonic() + call.deadline.remaining() - self.policy.placeholder_reserve
            if (came := await first_image(call.earlier, None, until)) is not None:
                return self._take(call, came)
        finally:
            call.leave_lane()
            for earlier in call.earlier:
                self._late.keep(earlier, call.context, call.keep_late)
        data, info = await self.placeholder.image(call.request, self._placeholder_note(call))
        metrics.PLACEHOLDERS.inc()
        return ChainResult(data, info, self.placeholder.name, True, call.attempts)

    def _placeholder_note(self, call: Call) -> str:
        if not self.slots:
            return "Placeholder: no image model is configured"
        if call.attempts and all(a.reason.startswith("budget") for a in call.attempts):
            return "Placeholder: the image budget is spent"
        return PLACEHOLDER_NOTE

    async def _ask(self, slot: ProviderSlot) -> Pass:
        """The breaker's answer: the replicas' shared one (which falls back to this
        replica's own while Redis is unreachable), or this replica's own."""
        if self.shared_breakers is not None:
            return await self.shared_breakers.ask(slot.breaker)
        return slot.breaker.ask()

    async def _tell(self, slot: ProviderSlot, outcome: Outcome, reason: str, granted: Pass) -> None:
        """What an attempt found, to the same breaker."""
        if self.shared_breakers is None:
            return slot.breaker.record(outcome, reason, granted)
        await self.shared_breakers.record(slot.breaker, outcome, reason, granted)

    def _release(self, slot: ProviderSlot, granted: Pass) -> None:
        """A call ends without a verdict on the provider: a probe's turn goes to the next."""
        slot.breaker.release(granted)
        if granted.probe and self.shared_breakers is not None:
            task = asyncio.ensure_future(self.shared_breakers.record(slot.breaker, Outcome.SKIPPED, "", granted))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def quote(self, request: ImageRequest, streamed: bool = True) -> tuple[float, list[str]]:
        """The most one image can cost on the available models, and those with no price."""
        return self.prices.quote([s.provider for s in self.slots if s.available], request, streamed)

    def _skip_reason(self, slot: ProviderSlot, call: Call, *, count: bool = False) -> str:
        if not slot.available:
            return f"model unavailable: {slot.unavailable_reason}"
        if len(call.request.prompt) > slot.provider.max_prompt_chars:
            return (
                f"prompt is {len(call.request.prompt)} characters; this model takes at most "
                f"{slot.provider.max_prompt_chars}"
            )
        if call.max_cost is not None:
            key = slot.provider.price_key(call.request)
            partials = billed_partials(slot.provider, call.on_partial is not None)
            estimate = self.prices.per_image(slot.name, key.size, key.quality, partials)
            if estimate is not None and estimate > call.max_cost + COST_SLACK:
                if count:
                    metrics.BUDGET_SKIPS.labels(slot.name).inc()
                return (
                    f"budget: this image would cost about ${estimate:.4f}; "
                    f"${max(call.max_cost, 0):.4f} is left under the cap"
                )
        return ""

    def _others_after(self, index: int, call: Call) -> int:
        """Models after this one that would be tried now."""
        return sum(1 for s in self.slots[index + 1 :] if not self._skip_reason(s, call) and s.breaker.would_pass())

    def _time_for(self, index: int, slot: ProviderSlot, call: Call) -> float:
        """The fair share: min(own timeout, what is left less the reserve, split evenly), but
        never less than a useful attempt while that much is left."""
        usable = call.deadline.remaining() - self.policy.placeholder_reserve
        share = max(usable / (1 + self._others_after(index, call)), min(self.policy.min_attempt, usable))
        return max(min(slot.attempt_timeout, share), 0.0)

    async def _try_provider(self, index: int, slot: ProviderSlot, granted: Pass, call: Call) -> ChainResult | None:
        policy = self.policy

        def worth_retrying(exc: BaseException) -> bool:
            if not isinstance(exc, ProviderFailure) or not exc.retry_same or granted.probe:
                return False
            if exc.outcome is not Outcome.RATE_LIMITED and self._others_after(index, call):
                return False  # the next model answers sooner than this one recovers
            if not slot.breaker.would_pass():
                return False
            return pause(exc) + policy.min_attempt <= self._time_for(index, slot, call)

        def pause(exc: ProviderFailure) -> float:
            return exc.retry_after if exc.retry_after is not None else policy.retry_backoff

        def wait_for(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            return pause(exc) if isinstance(exc, ProviderFailure) else policy.retry_backoff

        retrying = AsyncRetrying(
            stop=stop_after_attempt(1 + policy.same_provider_retries),
            wait=wait_for,
            retry=retry_if_exception(worth_retrying),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(index, slot, granted, call)
        except ProviderFailure:
            pass
        return None

    def _record(
        self,
        call: Call,
        provider: str,
        outcome: Outcome,
        reason: str,
        started: float,
        usage: Usage | None = None,
        cost: float | None = 0.0,
    ) -> None:
        ms = int((time.monotonic() - started) * 1000)
        call.attempts.append(AttemptRecord(provider, outcome, reason, ms, usage, cost))
        metrics.ATTEMPTS.labels(provider, outcome.value).inc()
        if outcome is not Outcome.SKIPPED:
            metrics.ATTEMPT_SECONDS.labels(provider).observe(ms / 1000)
        log.info(
            "provider attempt",
            extra={
                **call.context,
                "provider": provider,
                "attempt": len(call.attempts),
                "outcome": outcome.value,
                "reason": reason,
                "ms": ms,
            },
        )

    async def _attempt(self, index: int, slot: ProviderSlot, granted: Pass, call: Call) -> ChainResult:
        started = time.monotonic()
        if self._time_for(index, slot, call) < self.policy.min_attempt:
            self._not_sent(call, slot, granted, Outcome.SKIPPED, NO_TIME, started)
        prepared = self._prepare(slot, call, started)
        try:
            if not await self._enter_lane(call):
                self._not_sent(call, slot, granted, Outcome.TIMEOUT, NO_ROOM, started)
            # Everything this model gets, from waiting for a place at it to its answer: its
            # fair share of what is left now. No wait and no hang here can take the later
            # models' time.
            started = time.monotonic()
            ends = started + self._time_for(index, slot, call)
            if ends - started < self.policy.min_attempt:  # the lane's wait left too little
                self._not_sent(call, slot, granted, Outcome.SKIPPED, NO_TIME, started)
            why_not = await take_place(slot.semaphore, slot.breaker, granted, ends - self.policy.min_attempt)
            if why_not:
                self._not_sent(call, slot, granted, Outcome.SKIPPED, why_not, started)
        except BaseException:
            _drop(prepared)
            raise
        # From here the provider's place is the request's: it gives it back when it ends,
        # even after the chain has stopped waiting for it (a late image is still kept).
        started = time.monotonic()
        if (came := arrived(call.earlier)) is not None:  # while this one waited for its place
            _drop(prepared)
            slot.semaphore.release()
            self._release(slot, granted)
            return self._take(call, came)
        timeout = max(ends - started, self.policy.min_attempt)
        work = call.waiting = self._send(slot, call, started + slot.attempt_timeout, prepared)
        this = Earlier(slot.name, work, started, lambda i: self._cost(slot, i))  # if the chain stops waiting
        try:
            # Never cancels the request: on a timeout it goes on, and may still answer this
            # call while the next model is asked (an earlier one's image that comes first wins).
            came = await first_image(call.earlier, work, started + timeout)
            if came is not None:
                call.waiting = None
                call.earlier.append(this)
                self._release(slot, granted)
                self._record(call, slot.name, Outcome.SKIPPED, f"{came.provider}'s image came first", started)
                return self._take(call, came)
            if not work.done():
                raise TimeoutError
            image, info = work.result()
        except TimeoutError:
            call.waiting = None
            call.earlier.append(this)
            reason = f"no image within {timeout:.1f} s"
            self._record(call, slot.name, Outcome.TIMEOUT, reason, started)
            await self._tell(slot, Outcome.TIMEOUT, reason, granted)
            # Never asked again: the request may still be billed (a provider charges for an
            # image the caller stopped waiting for), so a second one could pay twice.
            raise ProviderFailure(Outcome.TIMEOUT, reason) from None
        except ProviderFailure as failure:
            self._record(call, slot.name, failure.outcome, failure.reason, started)
            await self._tell(slot, failure.outcome, failure.reason, granted)
            raise
        except asyncio.CancelledError:
            work.cancel()
            self._release(slot, granted)
            raise
        call.leave_lane()  # its image is in: the video's next request may go (a success opens no breaker)
        shape = f"{info.content_type} {info.width}x{info.height}"
        self._record(call, slot.name, Outcome.SUCCESS, shape, started, image.usage, self._cost(slot, image))
        await self._tell(slot, Outcome.SUCCESS, "", granted)
        return ChainResult(image.data, info, slot.name, False, list(call.attempts))

    def _take(self, call: Call, came: Earlier) -> ChainResult:
        """The call's answer: the image of a request it had stopped waiting for. Its model's
        breaker heard the timeout and hears nothing more, as for any late image."""
        call.earlier.remove(came)
        call.leave_lane()
        metrics.LATE_TAKEN.labels(came.provider).inc()
        image, info = came.work.result()
        reason = f"{info.content_type} {info.width}x{info.height}, after its time, while the next model was asked"
        self._record(call, came.provider, Outcome.SUCCESS, reason, came.started, image.usage, came.cost(image))
        return ChainResult(image.data, info, came.provider, False, list(call.attempts))

    def _not_sent(self, call: Call, slot: ProviderSlot, grant: Pass, outcome: Outcome, why: str, t: float) -> NoReturn:
        self._release(slot, grant)
        self._record(call, slot.name, outcome, why, t)
        raise ProviderFailure(outcome, why)

    async def _enter_lane(self, call: Call) -> bool:
        """The call's place in its video's lane, taken once and held until the call leaves
        the chain (never by a request left to finish late). It may wait up to the caller's
        deadline less the placeholder's time; the call's own clock starts when it is let in."""
        if call.in_lane or call.lane is None:
            call.deadline.start()
            return True
        waiting = call.deadline.limit - time.monotonic() - self.policy.placeholder_reserve
        try:
            async with asyncio.timeout(waiting if waiting < math.inf else None):
                await call.lane.acquire()
        except TimeoutError:
            return False
        call.in_lane = True
        call.deadline.start()
        return True

    def _prepare(self, slot: ProviderSlot, call: Call, now: float) -> Prepared | None:
        """A call that must wait for its lane has its request built meanwhile and held at
        its gate: once the lane and the provider's place are its, the request goes out
        without the client's building on the way (bench/RESULTS.md, "built while waiting")."""
        if not (slot.provider.prepares and call.waits_for_lane()):
            return None
        gate = SendGate()
        return gate, asyncio.create_task(self._call_provider(slot, call, now + slot.attempt_timeout, gate))

    def _send(self, slot: ProviderSlot, call: Call, deadline: float, prepared: Prepared | None) -> Work:
        """The request let go, its places held: the one built while the call waited, else
        one made now (also when the built one ended at its gate: it was never sent)."""
        if prepared is not None:
            gate, work = prepared
            if not work.done():
                gate.open(deadline)
                return work
            _drop(prepared)
        return asyncio.create_task(self._call_provider(slot, call, deadline))

    async def _call_provider(
        self, slot: ProviderSlot, call: Call, deadline: float, gate: SendGate | None = None
    ) -> tuple[ProviderImage, ImageInfo]:
        """One request and the check of what it answered; the provider's place is given
        back when it ends, whether or not the chain still waits for it. With ``gate``, the
        request is built now and sent when the gate opens (the places held, its deadline
        then known); cancelled before that, it was never sent and holds no place."""
        if gate is not None:
            SEND_GATE.set(gate)  # this task's own context

        async def partial(frame: Partial) -> None:
            if call.on_partial is None or call.waiting is not asyncio.current_task():
                return  # the chain stopped waiting for this request: not shown
            try:
                info = await check_image(frame.data)
            except InvalidImage as exc:  # checked like a final: a broken one is never shown
                metrics.PARTIALS.labels(slot.name, "broken").inc()
                log.warning("a broken partial image was dropped", extra={**call.context, "error": str(exc)})
                return
            metrics.PARTIALS.labels(slot.name, "passed").inc()
            await call.on_partial(PartialImage(frame.data, info, frame.index, slot.name))

        try:
            image = await slot.provider.generate(call.request, deadline, partial if call.on_partial else None)
            try:
                return image, await check_image(image.data)
            except InvalidImage as exc:
                raise ProviderFailure(Outcome.INVALID_IMAGE, str(exc)) from None
        finally:
            if gate is None or gate.opened:
                slot.semaphore.release()

    def _cost(self, slot: ProviderSlot, image: ProviderImage) -> float | None:
        return self.prices.charge(slot.name, image.key, image.usage, image.partials)

    async def close(self) -> None:
        """Stop the requests still finishing in the background and close the providers."""
        await self._late.close()
        for slot in self.slots:
            await slot.provider.close()


# A request built while its call waits for its places, and its gate.
Prepared = tuple[SendGate, Work]


def _drop(prepared: Prepared | None) -> None:
    """A built request never let go: stopped at its gate, where it sent nothing and held no
    place (one that ended there is over; its error is no failure of the call)."""
    if prepared is None:
        return
    _gate, work = prepared
    if not work.done():
        work.cancel()
    elif not work.cancelled():
        work.exception()
