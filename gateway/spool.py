"""What a run could not hand on, kept on disk until a later run of the video does.

An image from a paid provider is money spent: when storage fails, the bytes wait here so
resuming the video uploads them instead of generating (paying for) the scene again. When
the status service cannot record a stored scene, its result waits here too, so a resume
records it instead of generating it again. Files are written atomically and removed once
handed on."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path

from services.common import validation
from services.common.objects import write_atomically

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpooledImage:
    data: bytes | memoryview  # from imagegen: a view of the gRPC answer (services/common/wire.py)
    content_type: str
    extension: str
    provider: str
    placeholder: bool
    attempts: int
    cost_usd: float = 0.0
    cost_known: bool = True
    paid_at_ms: int = 0
    # Why a placeholder was used ("budget", "imagegen unavailable", "every provider failed").
    reason: str = ""
    # The status store's spend hold this image was paid under (released by its report).
    hold: str = ""


@dataclass
class Pending:
    images: set[int] = field(default_factory=set)  # scenes with a kept image
    results: dict[int, bytes] = field(default_factory=dict)  # unrecorded SceneResults, serialised


class ImageSpool:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _paths(self, video_id: str, scene: int) -> tuple[Path, Path]:
        base = self.root / validation.video_id(video_id) / f"scene-{validation.scene_number(scene)}"
        return base.with_suffix(".img"), base.with_suffix(".json")

    async def put(self, video_id: str, scene: int, image: SpooledImage) -> None:
        data_path, meta_path = self._paths(video_id, scene)
        meta = {f.name: getattr(image, f.name) for f in fields(image) if f.name != "data"}
        try:
            await asyncio.to_thread(write_atomically, data_path, image.data)
            await asyncio.to_thread(write_atomically, meta_path, json.dumps(meta).encode())
        except OSError as exc:
            log.error(
                "could not keep the image for a later run",
                extra={"video_id": video_id, "scene": scene, "error": str(exc)},
            )

    async def take(self, video_id: str, scene: int) -> SpooledImage | None:
        data_path, meta_path = self._paths(video_id, scene)

        def read() -> SpooledImage | None:
            try:
                meta = json.loads(meta_path.read_text())
                return SpooledImage(data=data_path.read_bytes(), **meta)
            except (OSError, ValueError, TypeError):
                return None

        return await asyncio.to_thread(read)

    def _result_path(self, video_id: str, scene: int) -> Path:
        return self.root / validation.video_id(video_id) / f"scene-{validation.scene_number(scene)}.result"

    async def put_result(self, video_id: str, scene: int, result: bytes) -> None:
        try:
            await asyncio.to_thread(write_atomically, self._result_path(video_id, scene), result)
        except OSError as exc:
            log.error(
                "could not keep the scene result for a later run",
                extra={"video_id": video_id, "scene": scene, "error": str(exc)},
            )

    async def drop_result(self, video_id: str, scene: int) -> None:
        self._result_path(video_id, scene).unlink(missing_ok=True)

    async def pending(self, video_id: str) -> Pending:
        """What earlier runs of this video left here: kept images and unrecorded results
        (one directory listing per run)."""

        def listing() -> Pending:
            pending = Pending()
            folder = self.root / validation.video_id(video_id)
            try:
                for path in folder.iterdir():
                    name = path.name
                    if not name.startswith("scene-"):
                        continue
                    number, _, kind = name[6:].partition(".")
                    if not number.isdigit():
                        continue
                    if kind == "img":
                        pending.images.add(int(number))
                    elif kind == "result":
                        pending.results[int(number)] = path.read_bytes()
            except OSError:
                return Pending()
            return pending

        return await asyncio.to_thread(listing)

    async def drop(self, video_id: str, scene: int) -> None:
        for path in self._paths(video_id, scene):
            path.unlink(missing_ok=True)
