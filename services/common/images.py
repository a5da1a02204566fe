"""What an image really is (decoded by Pillow, never trusted from a label), and the
rendered placeholder that every part of the system can make without a network."""

from __future__ import annotations

import asyncio
import io
import textwrap
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

# Formats we store, with their MIME type and file extension.
FORMATS: dict[str, tuple[str, str]] = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "WEBP": ("image/webp", "webp"),
    "GIF": ("image/gif", "gif"),
}
CONTENT_TYPES = frozenset(mime for mime, _ in FORMATS.values())
# Decoding bombs: nothing we generate is larger than this many pixels.
MAX_PIXELS = 4096 * 4096
# Images up to this size are checked on the event loop: a thread hop costs more than the check.
INLINE_CHECK_BYTES = 256 * 1024


class InvalidImage(ValueError):
    """The bytes are not an image in a format we store."""


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    extension: str
    width: int
    height: int


def inspect_image(data: bytes) -> ImageInfo:
    """Report the real format after checking that the bytes are a whole, sound image.

    The check is the cheapest that catches truncated and corrupted bodies for each format
    (a full pixel decode of every image was the pipeline's largest cost; bench/RESULTS.md):
    PNG runs its chunk CRCs and structure check, JPEG decodes at 1/8 scale (a flipped bit
    inside JPEG entropy data passes a full decode too), other formats decode fully."""
    if not data:
        raise InvalidImage("no bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise InvalidImage(f"{width}x{height} is larger than {MAX_PIXELS} pixels")
            if fmt == "PNG":
                img.verify()
            elif fmt == "JPEG":
                img.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                img.load()
            else:
                img.load()
    except InvalidImage:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImage(f"not a decodable image: {exc}") from exc
    if fmt not in FORMATS:
        raise InvalidImage(f"format {fmt or 'unknown'} is not one of {', '.join(FORMATS)}")
    mime, ext = FORMATS[fmt]
    return ImageInfo(mime, ext, width, height)


async def check_image(data: bytes) -> ImageInfo:
    """inspect_image from async code: a large image's check (milliseconds of CPU) runs in a
    thread, off the event loop; a small one in place."""
    if len(data) > INLINE_CHECK_BYTES:
        return await asyncio.to_thread(inspect_image, data)
    return inspect_image(data)


def render_placeholder(width: int, height: int, label: str = "") -> bytes:
    """A calm grey PNG at the requested size with a short label; never raises for sane sizes."""
    img = Image.new("RGB", (width, height), (226, 228, 233))
    draw = ImageDraw.Draw(img)
    border = max(2, min(width, height) // 64)
    draw.rectangle((0, 0, width - 1, height - 1), outline=(180, 184, 194), width=border)
    text = "\n".join(textwrap.wrap(label or "Image unavailable", width=32)[:4])
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(
            size=max(12, min(width, height) // 18)
        )
    except (OSError, TypeError):
        font = ImageFont.load_default()
    box = draw.multiline_textbbox((0, 0), text, font=font, align="center")
    x = (width - (box[2] - box[0])) / 2
    y = (height - (box[3] - box[1])) / 2
    draw.multiline_text((x, y), text, fill=(96, 102, 116), font=font, align="center")
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=False)
    return out.getvalue()


# Lossy qualities tried, best first, when an image must shrink to fit a size limit.
SHRINK_QUALITIES = (85, 70, 55, 40, 25, 10)


def reencode_below(data: bytes | memoryview, limit: int) -> tuple[bytes, ImageInfo] | None:
    """The image at the same pixel size as WebP (else JPEG) at the best quality whose bytes
    are below ``limit``; None when none is."""
    try:
        with Image.open(io.BytesIO(data)) as source:
            source.load()
            picture = source.convert("RGBA" if "A" in source.getbands() else "RGB")
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    for fmt in ("WEBP", "JPEG"):
        image = picture if fmt == "WEBP" else picture.convert("RGB")
        for quality in SHRINK_QUALITIES:
            out = io.BytesIO()
            image.save(out, format=fmt, quality=quality)
            if out.tell() < limit:
                encoded = out.getvalue()
                return encoded, inspect_image(encoded)
    return None
