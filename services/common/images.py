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


PLACEHOLDER_NOTE = "Placeholder: the real image could not be made"


def render_placeholder(
    width: int, height: int, scene: int = 0, prompt: str = "", note: str = PLACEHOLDER_NOTE
) -> bytes:
    """A card at the requested size that tells the story: the scene's number, the first
    words of its prompt, and a line saying it is a placeholder (a storyboard of them reads
    as the story, not as a row of grey boxes). Never raises for sane sizes."""
    img = Image.new("RGB", (width, height), (236, 238, 243))
    draw = ImageDraw.Draw(img)
    side = min(width, height)
    border = max(2, side // 64)
    draw.rectangle((0, 0, width - 1, height - 1), outline=(180, 184, 194), width=border)
    margin = max(8, side // 16)
    title = _font(max(14, side // 10))
    body = _font(max(11, side // 22))
    small = _font(max(9, side // 34))
    y: float = margin
    if scene:
        draw.text((margin, y), f"Scene {scene}", fill=(52, 58, 72), font=title)
        y = draw.textbbox((margin, y), f"Scene {scene}", font=title)[3] + margin // 2
    words = " ".join(prompt.split()[:24])
    if words:
        per_line = max(8, int((width - 2 * margin) / max(1.0, body.getlength("x"))))
        lines = textwrap.wrap(words, width=per_line)
        shown = lines[:5]
        if len(lines) > 5 or len(prompt.split()) > 24:
            shown[-1] = shown[-1].rstrip(".,;:") + " …"
        draw.multiline_text((margin, y), "\n".join(shown), fill=(70, 76, 92), font=body, spacing=side // 80)
    footer = note or PLACEHOLDER_NOTE
    box = draw.textbbox((0, 0), footer, font=small)
    draw.text((margin, height - margin - (box[3] - box[1])), footer, fill=(128, 134, 150), font=small)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, TypeError):
        return ImageFont.load_default()


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
