"""The last link of every chain: a configured file when readable and valid, else a card
rendered at the requested size that tells the story (the scene's number, the first words of
its prompt, and that it is a placeholder). Never raises."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from services.common.images import PLACEHOLDER_NOTE, ImageInfo, InvalidImage, inspect_image, render_placeholder
from services.imagegen.providers.base import ImageRequest

log = logging.getLogger(__name__)

PLACEHOLDER_NAME = "placeholder"
_CACHE_SIZE = 64


class PlaceholderProvider:
    name = PLACEHOLDER_NAME

    def __init__(self, path: Path | None = None) -> None:
        self._file: tuple[bytes, ImageInfo] | None = None
        # The last cards made (a retried scene asks for the same one).
        self._rendered: dict[tuple[tuple[int, int], int, str, str], tuple[bytes, ImageInfo]] = {}
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

    async def image(self, request: ImageRequest, note: str = PLACEHOLDER_NOTE) -> tuple[bytes, ImageInfo]:
        """The configured file, or a card at the requested size with the scene's number,
        the first words of its prompt and ``note`` (why it is a placeholder)."""
        if self._file is not None:
            return self._file
        key = (request.size, request.scene, request.prompt, note)
        cached = self._rendered.get(key)
        if cached is not None:
            return cached
        # Rendering takes tens of milliseconds: keep it off the event loop.
        data = await asyncio.to_thread(render_placeholder, *request.size, request.scene, request.prompt, note)
        made = self._rendered[key] = (data, inspect_image(data))
        while len(self._rendered) > _CACHE_SIZE:
            self._rendered.pop(next(iter(self._rendered)))
        return made
