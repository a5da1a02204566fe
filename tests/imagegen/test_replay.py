"""The replay cache of paid images: bounded by bytes (least recently used go first), kept
for a TTL, never holding placeholders."""

from __future__ import annotations

from services.common.images import ImageInfo
from services.imagegen.replay import ReplayCache, ReplayKey
from services.imagegen.results import ChainResult
from tests.conftest import eventually

INFO = ImageInfo("image/png", "png", 64, 64)


def image(n: int, size: int = 40, placeholder: bool = False) -> ChainResult:
    return ChainResult(bytes([n]) * size, INFO, "m", placeholder, [])


def key(scene: int) -> ReplayKey | None:
    return ReplayKey.of("v", scene, "a fox", (64, 64), "")


def test_the_least_recently_used_image_goes_first_when_the_bytes_run_out() -> None:
    cache = ReplayCache(max_bytes=100, ttl=3600)
    cache.put(key(1), image(1))
    cache.put(key(2), image(2))
    assert cache.get(key(1)) is not None  # scene 1 is now the most recently used
    cache.put(key(3), image(3))  # 120 bytes: one must go
    assert cache.get(key(2)) is None
    assert cache.get(key(1)) is not None and cache.get(key(3)) is not None


def test_an_image_larger_than_the_cache_and_placeholders_are_never_kept() -> None:
    cache = ReplayCache(max_bytes=100, ttl=3600)
    cache.put(key(1), image(1, size=101))
    cache.put(key(2), image(2, placeholder=True))
    assert cache.get(key(1)) is None and cache.get(key(2)) is None
    assert ReplayKey.of("", 1, "a fox", (64, 64), "") is None  # not a scene of a video: never cached


async def test_an_image_expires_after_its_ttl() -> None:
    cache = ReplayCache(max_bytes=1000, ttl=0.05)
    cache.put(key(1), image(1))
    assert cache.get(key(1)) is not None

    async def expired() -> bool:
        return cache.get(key(1)) is None

    assert await eventually(expired, timeout=5)
