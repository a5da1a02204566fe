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
from dataclasses import dataclass
from functools import cached_property

from isal import isal_zlib
from PIL import Image, UnidentifiedImageError

from services.common.errors import InvalidArgument
from services.common.images import FORMATS, MAX_PIXELS, ImageInfo, InvalidImage, check_image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Bytes the walk collects before each step: the signature, a chunk's length and type, its CRC.
HEAD_BYTES = {"signature": 8, "header": 8, "crc": 4}


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
                self._crc = isal_zlib.crc32(take, self._crc)
                self._left -= len(take)
                view = view[len(take) :]
                if not self._left:
                    self._state = "crc"
                continue
            need = HEAD_BYTES[self._state] - len(self._head)
            self._head += view[:need]
            view = view[need:]
            if len(self._head) == HEAD_BYTES[self._state]:
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
            self._type, self._left, self._crc = kind, length, isal_zlib.crc32(kind)
            self._state = "data" if length else "crc"
        else:
            if struct.unpack(">I", head)[0] != self._crc:
                raise InvalidImage(f"PNG chunk {self._type.decode()} fails its CRC check (corrupted bytes)")
            self._chunks += 1
            self._state = "end" if self._type == b"IEND" else "header"


Chunk = bytes | memoryview  # a view: UploadStream's chunks come as views of gRPC's bytes


@dataclass(frozen=True)
class Received:
    parts: tuple[Chunk, ...]
    size: int
    sha256: str
    info: ImageInfo

    @cached_property
    def data(self) -> bytes:
        """The image in one piece, made only when asked for (an HTTP upload, a retry): a
        staged local write never needs it."""
        return bytes(self.parts[0]) if len(self.parts) == 1 else b"".join(self.parts)


class Incoming:
    """One image's bytes, fed in order. Refuses more bytes than announced at once, and in
    finish() fewer, a broken image, or one whose real format is not the stated type."""

    def __init__(self, content_type: str, size: int) -> None:
        self.content_type = content_type
        self.size = size
        self.received = 0
        self.error: InvalidArgument | None = None
        self._parts: list[Chunk] = []
        self._digest = hashlib.sha256()
        self._png = PngWalker() if content_type == "image/png" else None

    def add(self, chunk: Chunk) -> None:
        """Count, check and hash one chunk; raises at the first thing wrong."""
        self.take(len(chunk))
        self.check(chunk)
        self.hash(chunk)
        if self.error is not None:
            raise self.error

    def take(self, length: int) -> None:
        """Count a chunk's bytes (cheap, and first): more than announced is refused at once."""
        if self.received + length > self.size:
            raise InvalidArgument(
                f"more bytes than announced: the header said {self.size}, {self.received + length} arrived"
            )
        self.received += length

    def check(self, chunk: Chunk) -> None:
        """Check a counted chunk and keep it: the costly part, run (with hash) in threads of
        their own while the next chunk arrives (see Uploader.receive). A refusal is kept in
        `error` and raised by finish(); chunks after it are not looked at."""
        if self.error is not None:
            return
        if self._png is not None and not self._png.complete:
            try:
                self._png.feed(chunk)
            except InvalidImage as exc:
                self.error = self._refusal(exc, chunk if not self._parts else self._parts[0])
                return
        self._parts.append(chunk)

    def hash(self, chunk: Chunk) -> None:
        """Add a counted chunk to the digest (chunks in order, from one thread at a time)."""
        self._digest.update(chunk)

    async def finish(self) -> Received:
        if self.error is not None:
            raise self.error
        if self.received != self.size:
            raise InvalidArgument(
                f"the image ended after {self.received} of the {self.size} bytes announced; send it whole"
            )
        parts = tuple(self._parts)
        if self._png is not None:
            start = head(parts, 24)  # through the IHDR
            if not self._png.complete:
                raise self._refusal(InvalidImage("truncated PNG: it ends before its IEND chunk"), start)
            info = png_info(start)
        else:
            parts = (b"".join(parts),)  # decoded whole: the one copy is needed anyway
            try:
                info = await check_image(parts[0])
            except InvalidImage as exc:
                raise InvalidArgument(f"data is not an image: {exc}") from exc
        if info.content_type != self.content_type:
            raise InvalidArgument(
                f"content type {self.content_type} does not match the bytes, which are {info.content_type}"
            )
        return Received(parts, self.size, self._digest.hexdigest(), info)

    def _refusal(self, exc: InvalidImage, start: Chunk) -> InvalidArgument:
        """The error for an image the PNG walk refused: a mislabelled image is named as what it is."""
        found = sniff(bytes(start))  # the refusal path: a copy costs nothing here
        if found and found != "image/png":
            return InvalidArgument(f"content type image/png does not match the bytes, which are {found}")
        return InvalidArgument(f"data is not an image: {exc}")


def head(parts: tuple[Chunk, ...], length: int) -> bytes:
    """The first ``length`` bytes of an image held in parts (which may be tiny)."""
    start = b""
    for part in parts:
        start += part[: length - len(start)]
        if len(start) >= length:
            break
    return start


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
