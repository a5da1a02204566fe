"""One shared-state call (services/imagegen/shared.py: SharedState.call) on the real Redis:
whatever the Redis client does, the request that asked goes on."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from services.imagegen.shared import SharedState
from tests.redis_server import Prefix


def errors(op: str) -> float:
    return REGISTRY.get_sample_value("storyshort_imagegen_shared_state_errors_total", {"op": op}) or 0.0


def test_the_redis_client_failing_its_own_way_fails_no_request(redis_prefix: Prefix) -> None:
    """redis-py once raised an AttributeError (a connection it was opening closed under it):
    the call answers None, as for any Redis trouble, counts the error, and the state stays up
    for the ping to judge; a plain call after it is answered."""

    async def run() -> tuple[object, bool, object]:
        shared = SharedState(redis_prefix.url, redis_prefix.name, timeout=1.0, lease=15.0, local_share=0.5)
        await shared.start()
        try:

            async def broken() -> int:
                raise AttributeError("'NoneType' object has no attribute 'writelines'")

            failed = await shared.call("broken-client", broken)
            answered = await shared.call("ping", shared.redis.ping)
            return failed, shared.up, answered
        finally:
            await shared.close()

    before = errors("broken-client")
    failed, up, answered = asyncio.run(run())
    assert failed is None
    assert errors("broken-client") == before + 1
    assert up and answered is True
