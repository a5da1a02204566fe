"""Start the imagegen service: `python -m services.imagegen`."""

from __future__ import annotations

import asyncio
import logging

from services.common.config import ImagegenSettings, load_settings
from services.common.logs import register_secret, setup_logging
from services.common.memory import tune_allocator
from services.common.metrics import serve_metrics
from services.common.server import Registration, serve_until_signal, start_server
from services.imagegen import metrics
from services.imagegen.breaker import Breaker, BreakerPolicy
from services.imagegen.chain import ChainPolicy, ProviderChain, ProviderSlot
from services.imagegen.chain_config import ProviderEntry, key_of, load_entries
from services.imagegen.prices import PriceTable
from services.imagegen.providers.base import Outcome
from services.imagegen.providers.openai_images import OpenAIImageProvider, check_models
from services.imagegen.providers.placeholder import PlaceholderProvider
from services.imagegen.providers.registry import KINDS
from services.imagegen.replay import ReplayCache
from services.imagegen.servicer import SERVICE, ImageGenServicer
from storyshort.imagegen.v1 import imagegen_pb2_grpc

log = logging.getLogger("imagegen")
MODEL_LIST_TIMEOUT = 5.0


async def build_chain(settings: ImagegenSettings) -> ProviderChain:
    """The chain as configured (chain_config.py), each model checked at start where its
    vendor lists models; every metric series exists from the start."""
    policy = ChainPolicy(
        placeholder_reserve=settings.placeholder_reserve,
        min_attempt=settings.min_attempt,
        same_provider_retries=settings.same_provider_retries,
        late_max=settings.late_max,
    )
    breakers = BreakerPolicy(
        threshold=settings.breaker_threshold,
        cooldown=settings.breaker_transient_cooldown,
        hard_cooldown=settings.breaker_cooldown,
        max_cooldown=settings.breaker_max_cooldown,
    )
    placeholder = PlaceholderProvider(settings.placeholder_path)
    prices = PriceTable.load(settings.prices_file)
    entries = load_entries(settings)
    if not entries:
        log.warning("no provider configured (no OPENAI_API_KEY, no IMAGEGEN_CHAIN_FILE): every image is a placeholder")
        return ProviderChain([], placeholder, policy, prices)
    slots = []
    for entry in entries:
        key = key_of(entry, settings)
        register_secret(key)
        if entry.price is not None:
            prices.models[entry.name] = entry.price
        slots.append(
            ProviderSlot(
                provider=KINDS[entry.kind].build(entry, key),
                concurrency=entry.concurrency or settings.concurrency,
                attempt_timeout=entry.attempt_timeout(settings),
                breaker=Breaker(entry.name, breakers),
            )
        )
    if settings.model_check:
        await check_listed_models(entries, slots)
    log.info(
        "provider chain",
        extra={
            "chain": [f"{s.name} ({s.provider.kind})" for s in slots if s.available] + [placeholder.name],
            "attempt_timeouts_s": {s.name: s.attempt_timeout for s in slots},
            "image_gen_timeout_s": settings.image_gen_timeout,
        },
    )
    prices.warn_missing([s.name for s in slots])
    for slot in slots:  # every series exists from the start, so alerts see the first increase
        metrics.MODEL_AVAILABLE.labels(slot.name).set(1 if slot.available else 0)
        metrics.SPEND.labels(slot.name)
        metrics.UNPRICED_IMAGES.labels(slot.name)
        metrics.BUDGET_SKIPS.labels(slot.name)
        metrics.LATE_IMAGES.labels(slot.name)
        metrics.LATE_ABANDONED.labels(slot.name)
        for outcome in Outcome:
            metrics.ATTEMPTS.labels(slot.name, outcome.value)
            metrics.FALLBACKS.labels(slot.name, outcome.value)
    return ProviderChain(slots, placeholder, policy, prices)


async def check_listed_models(entries: list[ProviderEntry], slots: list[ProviderSlot]) -> None:
    """Skip, loudly, a configured model that its vendor's model list marks retired or lacks."""
    for entry, slot in zip(entries, slots, strict=True):
        if not KINDS[entry.kind].lists_models or not isinstance(slot.provider, OpenAIImageProvider):
            continue
        official = entry.kind == "openai"
        checks = await check_models(slot.provider.client, [slot.provider.model], MODEL_LIST_TIMEOUT, official=official)
        check = checks.get(slot.provider.model) if checks is not None else None
        if check is not None and not check.available:
            slot.available, slot.unavailable_reason = False, check.reason
            log.error(
                "configured model cannot be used and is skipped: change the chain",
                extra={"provider": slot.name, "reason": check.reason},
            )


async def build_servicer(settings: ImagegenSettings) -> ImageGenServicer:
    chain = await build_chain(settings)
    replay = ReplayCache(settings.replay_cache_mib * 1024 * 1024, settings.replay_ttl)
    return ImageGenServicer(chain, settings.image_gen_timeout, replay)


async def main() -> None:
    settings = load_settings(ImagegenSettings)
    setup_logging("imagegen", settings.log_level)
    tune_allocator()
    serve_metrics(settings.metrics_port, settings.grpc_host)
    servicer = await build_servicer(settings)
    running = await start_server(
        settings.grpc_host,
        settings.port,
        [Registration(imagegen_pb2_grpc.add_ImageGenServiceServicer_to_server, servicer, SERVICE)],
        settings.server_credentials(),
    )
    log.info("listening", extra={"address": f"{settings.grpc_host}:{running.port}"})

    await serve_until_signal(running, settings.shutdown_grace, servicer.chain.close)


if __name__ == "__main__":
    asyncio.run(main())
