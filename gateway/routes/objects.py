"""Images stored by the local backend, served at Supabase's public URL layout."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from gateway.deps import SettingsDep
from gateway.errors import HTTPError
from gateway.routes import ERRORS
from services.common import objects
from services.common.objects import PUBLIC_PREFIX, resolve_inside

router = APIRouter()
MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}


@router.get(PUBLIC_PREFIX + "/{bucket}/{object_path:path}", responses=ERRORS, include_in_schema=True)
async def public_object(bucket: str, object_path: str, settings: SettingsDep) -> Response:
    """Images stored by the local backend, at Supabase's public URL layout."""
    if bucket != settings.bucket:
        raise HTTPError(404, "NOT_FOUND", f"no bucket {bucket!r}")
    objects.object_path(object_path)
    target = resolve_inside(settings.storage_root, bucket, object_path)
    media = MEDIA_TYPES.get(target.suffix.lstrip(".").lower())
    if media is None or not target.is_file():
        raise HTTPError(404, "NOT_FOUND", f"no object {object_path!r}")
    return FileResponse(target, media_type=media, headers={"Cache-Control": "public, max-age=3600"})
