"""What the stores share from the settings: the frontend's videos table, as configured.
The store itself is built through the registry (stores/registry.py)."""

from __future__ import annotations

from services.common.config import StatusSettings
from services.status.model import ASSETS_GENERATED, FAILED, GENERATING
from services.status.stores.base import VideosTable


def videos_table(settings: StatusSettings) -> VideosTable:
    values = (
        (GENERATING, settings.status_generating),
        (ASSETS_GENERATED, settings.status_done),
        (FAILED, settings.status_failed),
    )
    if len({v for _, v in values}) != len(values):
        raise SystemExit("VIDEO_STATUS_GENERATING, VIDEO_STATUS_DONE and VIDEO_STATUS_FAILED must differ")
    return VideosTable(
        table=settings.videos_table,
        id=settings.id_column,
        status=settings.status_column,
        progress=settings.progress_column,
        owner=settings.owner_column,
        values=tuple((ours, theirs) for ours, theirs in values if ours != theirs),
    )
