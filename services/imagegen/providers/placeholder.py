"""The last link of every chain: a configured file when readable and valid, else an image
rendered at the requested size. Never raises."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from services.common.images import ImageInfo, InvalidImage, inspect_image, render_placeholder

log = logging.getLogger(__name__)

PLACEHOLDER_NAME = "placeholder"
_CACHE_SIZES = 16


class PlaceholderProvider:
    name = PLACEHOLDER_NAME

    def __init__(self, path: Path | None = None) -> None:
        self._file: tuple[bytes, ImageInfo] | None = None
        self._rendered: dict[tuple[int, int], tuple[bytes, ImageInfo]] = {}
        self._lock = asyncio.Lock()
        if path is not None:
            self._file = self._load(path)

    @staticmethod
    def _load(path: Path) -> tuple[bytes, ImageInfo] | None:
        try:
            data = path.read_bytes()
            return data, inspect_image(data)
        except (OSError, InvalidImage) as exc:
            log.warning(
                "placeholder file unusable; rendering placeholders instead",
                extra={"path": str(path), "error": str(exc)},
            )
            return None

    async def image(self, size: tuple[int, int]) -> tuple[bytes, ImageInfo]:
        if self._file is not None:
            return self._file
        cached = self._rendered.get(size)
        if cached is not None:
            return cached
        async with self._lock:
            if size not in self._rendered:
                # Rendering takes tens of milliseconds: keep it off the event loop.
                data = await asyncio.to_thread(render_placeholder, *size, "Preview image unavailable")
                if len(self._rendered) >= _CACHE_SIZES:
                    self._rendered.pop(next(iter(self._rendered)))
                self._rendered[size] = (data, inspect_image(data))
            return self._rendered[size]
