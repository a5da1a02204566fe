"""Start the imagegen service: `python -m services.imagegen`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from grpc_health.v1 import health_pb2

from services.common.config import ImagegenSettings, load_settings
from services.common.logs import register_secret, setup_logging
from services.common.memory import tune_allocator
from services.common.metrics import serve_metrics
from services.common.server import Registration, RunningServer, serve_until_signal, start_server
from services.imagegen import metrics
from services.imagegen.breaker import Breaker, BreakerPolicy
from services.imagegen.call import ChainPolicy, ProviderSlot
from services.imagegen.chain import ProviderChain
from services.imagegen.chain_config import ProviderEntry, key_of, load_entries
from services.imagegen.prices import PriceTable
from services.imagegen.providers.base import Outcome
from services.imagegen.providers.placeholder import PlaceholderProvider
from services.imagegen.providers.registry import KINDS
from services.imagegen.replay import ReplayCache
from services.imagegen.servicer import SERVICE, ImageGenServicer
from services.imagegen.shared import SharedState
from services.imagegen.shared_breaker import SharedBreakers
from services.imagegen.shared_replay import SharedReplay
from storyshort.imagegen.v1 import imagegen_pb2_grpc

log = logging.getLogger("imagegen")
MODEL_LIST_TIMEOUT = 5.0
# The replicas' shared state in the health service: NOT_SERVING while Redis is unreachable
# (the service itself stays SERVING: it works on with local state).
SHARED_STATE_HEALTH = "storyshort.imagegen.v1.SharedState"
# A caller's deadline beyond IMAGE_GEN_TIMEOUT (the gateway's margin, gateway/clients.py).
IMAGEGEN_MARGIN = 5.0


def breaker_policy(settings: ImagegenSettings) -> BreakerPolicy:
    return BreakerPolicy(
        threshold=settings.breaker_threshold,
        cooldown=settings.breaker_transient_cooldown,
        hard_cooldown=settings.breaker_cooldown,
        max_cooldown=settings.breaker_max_cooldown,
    )


async def build_chain(settings: ImagegenSettings) -> ProviderChain:
    """The chain as configured (chain_config.py), each model checked at start where its
    vendor lists models; every metric series exists from the start."""
    policy = ChainPolicy(
        placeholder_reserve=settings.placeholder_reserve,
        min_attempt=settings.min_attempt,
        same_provider_retries=settings.same_provider_retries,
        late_max=settings.late_max,
    )
    breakers = breaker_policy(settings)
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
        check_model = KINDS[entry.kind].check_model
        if check_model is None:
            continue
        check = await check_model(slot.provider, MODEL_LIST_TIMEOUT)
        if check is not None and not check.available:
            slot.available, slot.unavailable_reason = False, check.reason
            log.error(
                "configured model cannot be used and is skipped: change the chain",
                extra={"provider": slot.name, "reason": check.reason},
            )


async def build_servicer(settings: ImagegenSettings) -> tuple[ImageGenServicer, SharedState | None]:
    """The servicer and, with IMAGEGEN_SHARED_STATE, the shared state it uses."""
    chain = await build_chain(settings)
    shared, shared_replay = await share(settings, chain) if settings.shared_state else (None, None)
    replay = ReplayCache(settings.replay_cache_mib * 1024 * 1024, settings.replay_ttl)
    return ImageGenServicer(chain, settings.image_gen_timeout, replay, shared_replay), shared


async def share(settings: ImagegenSettings, chain: ProviderChain) -> tuple[SharedState, SharedReplay]:
    """Limits, breakers and paid images shared with the other replicas through Redis."""
    assert settings.shared_state is not None
    url = settings.shared_state.get_secret_value()
    register_secret(urlsplit(url).password)
    shared = SharedState(
        url,
        settings.shared_prefix,
        timeout=settings.shared_timeout,
        lease=settings.shared_lease,
        local_share=settings.shared_local_share,
        ping_timeout=settings.shared_ping_timeout,
    )
    await shared.start()
    for slot in chain.slots:
        slot.semaphore = shared.limit(slot.name, slot.concurrency)
    # A probe that never reports back (its replica died) frees the turn after this long.
    probe_for = max((slot.attempt_timeout for slot in chain.slots), default=60.0) + IMAGEGEN_MARGIN
    chain.shared_breakers = SharedBreakers(shared, breaker_policy(settings), probe_for)
    paying_for = 2 * settings.image_gen_timeout + IMAGEGEN_MARGIN
    replay = SharedReplay(shared, settings.shared_replay_mib * 1024 * 1024, settings.replay_ttl, paying_for)
    log.info(
        "shared state",
        extra={"prefix": settings.shared_prefix, "reachable": shared.up, "lease_s": settings.shared_lease},
    )
    return shared, replay


async def main() -> None:
    settings = load_settings(ImagegenSettings)
    setup_logging("imagegen", settings.log_level)
    tune_allocator()
    serve_metrics(settings.metrics_port, settings.grpc_host)
    servicer, shared = await build_servicer(settings)
    running = await start_server(
        settings.grpc_host,
        settings.port,
        [Registration(imagegen_pb2_grpc.add_ImageGenServiceServicer_to_server, servicer, SERVICE)],
        settings.server_credentials(),
        settings.service_token(),
    )
    log.info("listening", extra={"address": f"{settings.grpc_host}:{running.port}"})

    async def close() -> None:
        await servicer.chain.close()
        if shared is not None:
            await shared.close()

    if shared is not None:  # health detail: the shared state as a service of its own
        report = health_reporter(running)
        shared.on_change = report
        report(shared.up)
    await serve_until_signal(running, settings.shutdown_grace, close)


def health_reporter(running: RunningServer) -> Callable[[bool], None]:
    """SERVING / NOT_SERVING for SHARED_STATE_HEALTH as Redis comes and goes."""
    tasks: set[asyncio.Task[None]] = set()

    def report(up: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
        task = asyncio.ensure_future(running.health.set(SHARED_STATE_HEALTH, status))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return report


if __name__ == "__main__":
    asyncio.run(main())
