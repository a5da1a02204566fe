"""An image's bytes as they arrive: counted, hashed and (for PNG) checked chunk by chunk, so
when the last byte is in, the image is already known sound and its digest known.

Upload and UploadStream both go through here; a streamed image costs almost no time after
its last byte (bench/RESULTS.md, "Image bytes"). The checks are the ones inspect_image
makes, in the same order of cheapness: a PNG's chunk CRCs and structure (as Pillow's
`verify` walks them, but as the bytes come), every other format decoded whole at the end."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from services.common.errors import InvalidArgument
from services.common.images import FORMATS, MAX_PIXELS, ImageInfo, InvalidImage, check_image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class PngWalker:
    """Walks a PNG's chunks (length, type, data, CRC-32) across arbitrary splits of its
    bytes: IHDR first, every CRC right, IEND reached. Bytes after IEND are ignored, as
    Pillow ignores them."""

    def __init__(self) -> None:
        self._head = bytearray()  # signature, or a chunk's length and type, or its CRC
        self._state = "signature"
        self._left = 0  # data bytes of the current chunk still to come
        self._type = b""
        self._crc = 0
        self._chunks = 0

    @property
    def complete(self) -> bool:
        return self._state == "end"

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view and self._state != "end":
            if self._state == "data":
                take = view[: self._left]
                self._crc = zlib.crc32(take, self._crc)
                self._left -= len(take)
                view = view[len(take) :]
                if not self._left:
                    self._state = "crc"
                continue
            need = {"signature": 8, "header": 8, "crc": 4}[self._state] - len(self._head)
            self._head += view[:need]
            view = view[need:]
            if len(self._head) == {"signature": 8, "header": 8, "crc": 4}[self._state]:
                self._step(bytes(self._head))
                self._head.clear()

    def _step(self, head: bytes) -> None:
        if self._state == "signature":
            if head != PNG_SIGNATURE:
                raise InvalidImage("not a PNG (no PNG signature)")
            self._state = "header"
        elif self._state == "header":
            length, kind = struct.unpack(">I4s", head)
            if length > 0x7FFFFFFF or not kind.isalpha():
                raise InvalidImage(f"broken PNG chunk header after chunk {self._chunks}")
            if self._chunks == 0 and (kind != b"IHDR" or length != 13):
                raise InvalidImage("PNG does not start with its IHDR chunk")
            self._type, self._left, self._crc = kind, length, zlib.crc32(kind)
            self._state = "data" if length else "crc"
        else:
            if struct.unpack(">I", head)[0] != self._crc:
                raise InvalidImage(f"PNG chunk {self._type.decode()} fails its CRC check (corrupted bytes)")
            self._chunks += 1
            self._state = "end" if self._type == b"IEND" else "header"


@dataclass(frozen=True)
class Received:
    data: bytes
    sha256: str
    info: ImageInfo


class Incoming:
    """One image's bytes, fed in order. Refuses more bytes than announced at once, and in
    finish() fewer, a broken image, or one whose real format is not the stated type."""

    def __init__(self, content_type: str, size: int) -> None:
        self.content_type = content_type
        self.size = size
        self.received = 0
        self._parts: list[bytes] = []
        self._digest = hashlib.sha256()
        self._png = PngWalker() if content_type == "image/png" else None

    def add(self, chunk: bytes) -> None:
        if self.received + len(chunk) > self.size:
            raise InvalidArgument(
                f"more bytes than announced: the header said {self.size}, {self.received + len(chunk)} arrived"
            )
        if self._png is not None and not self._png.complete:
            try:
                self._png.feed(chunk)
            except InvalidImage as exc:
                raise self._refusal(exc, chunk if not self._parts else self._parts[0]) from exc
        self._digest.update(chunk)
        self._parts.append(chunk)
        self.received += len(chunk)

    async def finish(self) -> Received:
        if self.received != self.size:
            raise InvalidArgument(
                f"the image ended after {self.received} of the {self.size} bytes announced; send it whole"
            )
        data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts = [data]
        if self._png is not None:
            if not self._png.complete:
                raise self._refusal(InvalidImage("truncated PNG: it ends before its IEND chunk"), data)
            info = png_info(data)
        else:
            try:
                info = await check_image(data)
            except InvalidImage as exc:
                raise InvalidArgument(f"data is not an image: {exc}") from exc
        if info.content_type != self.content_type:
            raise InvalidArgument(
                f"content type {self.content_type} does not match the bytes, which are {info.content_type}"
            )
        return Received(data, self._digest.hexdigest(), info)

    def _refusal(self, exc: InvalidImage, start: bytes) -> InvalidArgument:
        """The error for an image the PNG walk refused: a mislabelled image is named as what it is."""
        found = sniff(start)
        if found and found != "image/png":
            return InvalidArgument(f"content type image/png does not match the bytes, which are {found}")
        return InvalidArgument(f"data is not an image: {exc}")


def sniff(start: bytes) -> str | None:
    """The format Pillow reads from an image's first bytes (its header only), or None."""
    try:
        with Image.open(io.BytesIO(start)) as img:
            found = FORMATS.get(img.format or "")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None
    return found[0] if found else None


def png_info(data: bytes) -> ImageInfo:
    """Size and format of a PNG whose chunks were already walked: the header alone."""
    width, height = struct.unpack(">II", data[16:24])
    if not width or not height:
        raise InvalidArgument("data is not an image: PNG with zero width or height")
    if width * height > MAX_PIXELS:
        raise InvalidArgument(f"data is not an image: {width}x{height} is larger than {MAX_PIXELS} pixels")
    mime, extension = FORMATS["PNG"]
    return ImageInfo(mime, extension, width, height)
