"""Small real images in each format, for fakes and tests."""

from __future__ import annotations

import functools
import io

from PIL import Image


@functools.lru_cache(maxsize=64)
def image_bytes(
    fmt: str = "PNG", size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (40, 120, 200)
) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()


def noisy_png(target_bytes: int) -> bytes:
    """A valid PNG of about ``target_bytes`` (random pixels do not compress)."""
    import os

    side = int((target_bytes / 3) ** 0.5) + 1
    img = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=0)
    return out.getvalue()
