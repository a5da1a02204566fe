"""Images already paid for, answered again instead of bought again.

When a caller dies after imagegen paid for an image (a worker killed mid-run, a gateway
restarted), the retried scene asks for the same image. A bounded in-memory cache keyed by
(video, scene, prompt, size, quality) answers it without a second provider request. It is
per process: with several imagegen replicas a retry may land on another one (README:
Scaling out). Placeholders are never cached."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass

from services.imagegen.chain import ChainResult


@dataclass(frozen=True)
class ReplayKey:
    digest: str

    @classmethod
    def of(cls, video_id: str, scene: int, prompt: str, size: tuple[int, int], quality: str) -> ReplayKey | None:
        if not video_id or scene < 1:
            return None  # only scenes of a video are retried by the pipeline
        raw = "\x00".join([video_id, str(scene), prompt, f"{size[0]}x{size[1]}", quality])
        return cls(hashlib.sha256(raw.encode()).hexdigest())


class ReplayCache:
    def __init__(self, max_bytes: int, ttl: float) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._items: OrderedDict[ReplayKey, tuple[ChainResult, float]] = OrderedDict()
        self._bytes = 0

    def get(self, key: ReplayKey | None) -> ChainResult | None:
        if key is None:
            return None
        found = self._items.get(key)
        if found is None:
            return None
        result, stored = found
        if time.monotonic() - stored > self.ttl:
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return result

    def put(self, key: ReplayKey | None, result: ChainResult) -> None:
        if key is None or result.placeholder or len(result.image) > self.max_bytes:
            return
        if key in self._items:
            self._drop(key)
        self._items[key] = (result, time.monotonic())
        self._bytes += len(result.image)
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._items)))

    def _drop(self, key: ReplayKey) -> None:
        result, _ = self._items.pop(key)
        self._bytes -= len(result.image)
