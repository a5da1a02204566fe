"""Start the imagegen service: `python -m services.imagegen`."""

from __future__ import annotations

import asyncio
import logging

from openai import AsyncOpenAI

from services.common.config import ImagegenSettings
from services.common.logs import register_secret, setup_logging
from services.common.metrics import serve_metrics
from services.common.server import Registration, serve_until_signal, start_server
from services.imagegen import metrics
from services.imagegen.chain import Breaker, ChainPolicy, ProviderChain, ProviderSlot
from services.imagegen.prices import PriceTable
from services.imagegen.providers.base import Outcome
from services.imagegen.providers.openai_images import OpenAIImageProvider, check_models, openai_client
from services.imagegen.providers.placeholder import PlaceholderProvider
from services.imagegen.replay import ReplayCache
from services.imagegen.servicer import SERVICE, ImageGenServicer
from storyshort.imagegen.v1 import imagegen_pb2_grpc

log = logging.getLogger("imagegen")
MODEL_LIST_TIMEOUT = 5.0


async def build_chain(settings: ImagegenSettings) -> tuple[ProviderChain, AsyncOpenAI | None]:
    policy = ChainPolicy(
        attempt_timeout=settings.attempt_timeout,
        placeholder_reserve=settings.placeholder_reserve,
        same_provider_retries=settings.same_provider_retries,
        breaker_cooldown=settings.breaker_cooldown,
    )
    placeholder = PlaceholderProvider(settings.placeholder_path)
    prices = PriceTable.load(settings.prices_file)
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    if not key or not settings.chain:
        log.warning("no OPENAI_API_KEY (or an empty IMAGEGEN_CHAIN): every image is the placeholder")
        return ProviderChain([], placeholder, policy, prices), None
    register_secret(key)
    client = openai_client(key, settings.openai_base_url)
    slots = []
    for model in settings.chain:
        limits = settings.provider_limits.get(model)
        slots.append(
            ProviderSlot(
                provider=OpenAIImageProvider(
                    client, model, quality=settings.quality, output_format=settings.output_format
                ),
                concurrency=(limits.concurrency if limits and limits.concurrency else settings.concurrency),
                attempt_timeout=(limits.timeout if limits and limits.timeout else settings.attempt_timeout),
                breaker=Breaker(model, settings.breaker_cooldown),
            )
        )
    if settings.model_check:
        checks = await check_models(client, settings.chain, MODEL_LIST_TIMEOUT)
        for slot in slots:
            check = checks.get(slot.name) if checks is not None else None
            if check is not None and not check.available:
                slot.available, slot.unavailable_reason = False, check.reason
                log.error(
                    "configured model cannot be used and is skipped: change IMAGEGEN_CHAIN",
                    extra={"provider": slot.name, "reason": check.reason},
                )
            metrics.MODEL_AVAILABLE.labels(slot.name).set(1 if slot.available else 0)
    log.info("provider chain", extra={"chain": [s.name for s in slots if s.available] + [placeholder.name]})
    prices.warn_missing(settings.chain)
    for slot in slots:  # every series exists from the start, so alerts see the first increase
        metrics.BREAKER_OPEN.labels(slot.name).set(0)
        metrics.SPEND.labels(slot.name)
        metrics.UNPRICED_IMAGES.labels(slot.name)
        metrics.BUDGET_SKIPS.labels(slot.name)
        for outcome in Outcome:
            metrics.ATTEMPTS.labels(slot.name, outcome.value)
    return ProviderChain(slots, placeholder, policy, prices), client


async def build_servicer(settings: ImagegenSettings) -> tuple[ImageGenServicer, AsyncOpenAI | None]:
    chain, client = await build_chain(settings)
    replay = ReplayCache(settings.replay_cache_mib * 1024 * 1024, settings.replay_ttl)
    return ImageGenServicer(chain, settings.image_gen_timeout, replay), client


async def main() -> None:
    settings = ImagegenSettings()
    setup_logging("imagegen", settings.log_level)
    serve_metrics(settings.metrics_port, settings.grpc_host)
    servicer, client = await build_servicer(settings)
    running = await start_server(
        settings.grpc_host,
        settings.port,
        [Registration(imagegen_pb2_grpc.add_ImageGenServiceServicer_to_server, servicer, SERVICE)],
        settings.server_credentials(),
    )
    log.info("listening", extra={"address": f"{settings.grpc_host}:{running.port}"})

    async def close() -> None:
        if client is not None:
            await client.close()

    await serve_until_signal(running, settings.shutdown_grace, close)


if __name__ == "__main__":
    asyncio.run(main())
