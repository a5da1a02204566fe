"""The provider chain: ordered providers, each attempt with its own slice of the budget,
a reserve kept so the placeholder always fits, breakers and per-provider concurrency
shared by every caller, and one retry policy in one place."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from services.common.deadlines import Budget
from services.common.images import ImageInfo, InvalidImage, check_image
from services.imagegen import metrics
from services.imagegen.admission import Admission
from services.imagegen.prices import PriceTable, Usage
from services.imagegen.providers.base import ImageProvider, Outcome, ProviderFailure
from services.imagegen.providers.placeholder import PlaceholderProvider

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChainPolicy:
    attempt_timeout: float = 30.0
    # Kept back from every provider attempt so the placeholder always fits.
    placeholder_reserve: float = 0.5
    # An attempt with less time than this is not started.
    min_attempt: float = 0.25
    # One more try of the same provider after a transient failure, when the budget allows.
    same_provider_retries: int = 1
    retry_backoff: float = 0.2
    breaker_cooldown: float = 300.0


@dataclass(frozen=True)
class AttemptRecord:
    provider: str
    outcome: Outcome
    reason: str
    ms: int
    usage: Usage | None = None
    # Estimated USD; None when the model has no price. Only a successful attempt is paid.
    cost: float | None = 0.0


@dataclass(frozen=True)
class ChainResult:
    image: bytes
    info: ImageInfo
    provider: str
    placeholder: bool
    attempts: list[AttemptRecord]

    @property
    def cost(self) -> float:
        return sum(a.cost or 0.0 for a in self.attempts)

    @property
    def cost_known(self) -> bool:
        return all(a.cost is not None for a in self.attempts)


class Breaker:
    """Opens on a hard failure; later calls skip the provider until the cooldown ends."""

    def __init__(self, name: str, cooldown: float) -> None:
        self.name = name
        self.cooldown = cooldown
        self.open_until = 0.0
        self.reason = ""

    def is_open(self) -> bool:
        is_open = time.monotonic() < self.open_until
        metrics.BREAKER_OPEN.labels(self.name).set(1 if is_open else 0)
        return is_open

    def trip(self, reason: str) -> None:
        self.open_until = time.monotonic() + self.cooldown
        self.reason = reason
        metrics.BREAKER_OPEN.labels(self.name).set(1)

    def seconds_left(self) -> float:
        return max(self.open_until - time.monotonic(), 0.0)


@dataclass
class ProviderSlot:
    provider: ImageProvider
    concurrency: int
    attempt_timeout: float
    breaker: Breaker
    available: bool = True
    unavailable_reason: str = ""
    semaphore: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.semaphore = asyncio.Semaphore(self.concurrency)

    @property
    def name(self) -> str:
        return self.provider.name


class ProviderChain:
    def __init__(
        self,
        slots: list[ProviderSlot],
        placeholder: PlaceholderProvider,
        policy: ChainPolicy,
        prices: PriceTable | None = None,
    ) -> None:
        self.slots = slots
        self.placeholder = placeholder
        self.policy = policy
        self.prices = prices or PriceTable({})

    async def generate(
        self,
        prompt: str,
        size: tuple[int, int],
        quality: str,
        budget: Budget,
        *,
        context: dict[str, object],
        max_cost: float | None = None,
        lane: asyncio.Semaphore | None = None,
    ) -> ChainResult:
        """The first provider's image, or the next one's, or the placeholder. ``lane`` limits
        how many requests of this call's video are at the providers at once."""
        attempts: list[AttemptRecord] = []
        for slot in self.slots:
            skip = self._skip_reason(slot, prompt) or self._over_budget(slot, size, quality, max_cost)
            if skip:
                attempts.append(AttemptRecord(slot.name, Outcome.SKIPPED, skip, 0))
                metrics.ATTEMPTS.labels(slot.name, Outcome.SKIPPED.value).inc()
                continue
            result = await self._try_provider(slot, prompt, size, quality, budget, attempts, context, lane)
            if result is not None:
                return result
            metrics.FALLBACKS.labels(slot.name, attempts[-1].outcome.value).inc()
        data, info = await self.placeholder.image(size)
        metrics.PLACEHOLDERS.inc()
        return ChainResult(data, info, self.placeholder.name, True, attempts)

    def _skip_reason(self, slot: ProviderSlot, prompt: str) -> str:
        if not slot.available:
            return f"model unavailable: {slot.unavailable_reason}"
        if slot.breaker.is_open():
            return f"breaker open for {slot.breaker.seconds_left():.0f} s more after: {slot.breaker.reason}"
        if len(prompt) > slot.provider.max_prompt_chars:
            return f"prompt is {len(prompt)} characters; this model takes at most {slot.provider.max_prompt_chars}"
        return ""

    def _over_budget(self, slot: ProviderSlot, size: tuple[int, int], quality: str, max_cost: float | None) -> str:
        if max_cost is None:
            return ""
        key = slot.provider.price_key(size, quality)
        estimate = self.prices.per_image(slot.name, key.size, key.quality)
        if estimate is not None and estimate > max_cost:
            metrics.BUDGET_SKIPS.labels(slot.name).inc()
            return f"budget: this image would cost about ${estimate:.4f}; ${max(max_cost, 0):.4f} is left under the cap"
        return ""

    def _time_for(self, slot: ProviderSlot, budget: Budget) -> float:
        return budget.slice(slot.attempt_timeout, reserve=self.policy.placeholder_reserve)

    async def _try_provider(
        self,
        slot: ProviderSlot,
        prompt: str,
        size: tuple[int, int],
        quality: str,
        budget: Budget,
        attempts: list[AttemptRecord],
        context: dict[str, object],
        lane: asyncio.Semaphore | None,
    ) -> ChainResult | None:
        policy = self.policy

        def worth_retrying(exc: BaseException) -> bool:
            if not isinstance(exc, ProviderFailure) or not exc.retry_same:
                return False
            wait = exc.retry_after if exc.retry_after is not None else policy.retry_backoff
            return wait + policy.min_attempt <= self._time_for(slot, budget)

        def wait_for(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, ProviderFailure) and exc.retry_after is not None:
                return exc.retry_after
            return policy.retry_backoff

        retrying = AsyncRetrying(
            stop=stop_after_attempt(1 + policy.same_provider_retries),
            wait=wait_for,
            retry=retry_if_exception(worth_retrying),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(slot, prompt, size, quality, budget, attempts, context, lane)
            return None  # unreachable: the last failure is re-raised
        except ProviderFailure as failure:
            if failure.outcome is Outcome.HARD_FAILURE:
                slot.breaker.trip(failure.reason)
                log.error(
                    "provider disabled until its breaker cools down: fix the key, billing or model",
                    extra={
                        **context,
                        "provider": slot.name,
                        "reason": failure.reason,
                        "cooldown_s": slot.breaker.cooldown,
                    },
                )
        return None

    async def _attempt(
        self,
        slot: ProviderSlot,
        prompt: str,
        size: tuple[int, int],
        quality: str,
        budget: Budget,
        attempts: list[AttemptRecord],
        context: dict[str, object],
        lane: asyncio.Semaphore | None,
    ) -> ChainResult:
        timeout = self._time_for(slot, budget)
        started = time.monotonic()

        def record(outcome: Outcome, reason: str, usage: Usage | None = None, cost: float | None = 0.0) -> int:
            ms = int((time.monotonic() - started) * 1000)
            attempts.append(AttemptRecord(slot.name, outcome, reason, ms, usage, cost))
            metrics.ATTEMPTS.labels(slot.name, outcome.value).inc()
            if outcome is not Outcome.SKIPPED:
                metrics.ATTEMPT_SECONDS.labels(slot.name).observe(ms / 1000)
            log.info(
                "provider attempt",
                extra={
                    **context,
                    "provider": slot.name,
                    "attempt": len(attempts),
                    "outcome": outcome.value,
                    "reason": reason,
                    "ms": ms,
                },
            )
            return ms

        if timeout < self.policy.min_attempt:
            record(Outcome.SKIPPED, "not enough time left in the budget")
            raise ProviderFailure(Outcome.SKIPPED, "no time left")
        loop = asyncio.get_running_loop()

        def admitted() -> None:
            # The attempt (and the call's budget, at its first request) starts now: the
            # time spent waiting for the video's lane or the provider's limit is not its own.
            nonlocal started, timeout
            budget.start()
            started, timeout = time.monotonic(), self._time_for(slot, budget)
            clock.reschedule(loop.time() + timeout)

        admission = Admission((lane, slot.semaphore) if lane else (slot.semaphore,), admitted)
        # Until it is let in, a request may wait up to the caller's deadline, less the
        # time the placeholder needs.
        waiting = budget.limit - time.monotonic() - self.policy.placeholder_reserve
        try:
            async with asyncio.timeout(waiting if waiting < math.inf else None) as clock:
                with admission.governing():
                    image = await slot.provider.generate(prompt, size, quality, slot.attempt_timeout)
                    data = image.data
        except TimeoutError:
            reason = f"no image within {timeout:.1f} s" if admission.admitted else "no room at the provider in time"
            timed_out = ProviderFailure(Outcome.TIMEOUT, reason)
            record(timed_out.outcome, timed_out.reason)
            raise timed_out from None
        except ProviderFailure as failure:
            record(failure.outcome, failure.reason)
            raise
        try:
            info = await check_image(data)
        except InvalidImage as exc:
            invalid = ProviderFailure(Outcome.INVALID_IMAGE, str(exc))
            record(invalid.outcome, invalid.reason)
            raise invalid from None
        cost = self.prices.cost(slot.name, image.key.size, image.key.quality, image.usage)
        if cost is None:
            metrics.UNPRICED_IMAGES.labels(slot.name).inc()
        else:
            metrics.SPEND.labels(slot.name).inc(cost)
        record(Outcome.SUCCESS, f"{info.content_type} {info.width}x{info.height}", image.usage, cost)
        return ChainResult(data, info, slot.name, False, list(attempts))
