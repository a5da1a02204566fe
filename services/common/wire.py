"""An image's bytes on the gRPC wire without protobuf's copies.

Python protobuf copies a bytes field when a message is built, again when it is serialised,
and twice more when it is parsed (into the message, then into the bytes read from it); for
a 5 MiB image each copy is a pass over 5 MiB, on a machine where three scenes run at once
(bench/RESULTS.md, "Image bytes, hop by hop"). Here the image field alone is written and
read by hand, and everything else in the message is left to protobuf:

- a `bytes` field that comes first on the wire is its tag, its length as a varint and the
  bytes; protobuf writes fields in field-number order, so for a message whose image is its
  lowest-numbered field the bytes written here are exactly protobuf's own (tests compare);
- reading takes the fast path only for that shape and hands anything else (other field
  orders, a repeated field, a truncated message) to protobuf, which decides as it always
  did: last value wins, a broken message fails to parse.

The services install these as the method's serializer or deserializer (`WIRE` on a
servicer, applied by services.common.server.start_server); callers that use the generated
stubs keep working, since the bytes on the wire are the same."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from storyshort.imagegen.v1 import imagegen_pb2
from storyshort.storage.v1 import storage_pb2

Image = bytes | memoryview
# The servicer attribute start_server reads: method name -> RpcMethodHandler fields to replace.
Codecs = dict[str, dict[str, Callable[[Any], Any]]]

LENGTH_DELIMITED = 2
UPLOAD_DATA_FIELD = 2  # UploadStreamRequest.data
GENERATE_IMAGE_FIELD = 1  # GenerateResponse.image


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(raw: bytes | memoryview, at: int) -> tuple[int, int] | None:
    """The varint at ``at`` and the offset after it; None when raw ends inside it or it is
    longer than protobuf allows (ten bytes)."""
    value = shift = 0
    for offset in range(at, min(at + 10, len(raw))):
        byte = raw[offset]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset + 1
        shift += 7
    return None


def bytes_field(number: int, payload: Image, rest: bytes = b"", *, presence: bool = False) -> bytes:
    """Field ``number`` holding ``payload``, then ``rest`` (the message's other fields as
    protobuf serialised them): one copy of the payload, into the bytes gRPC sends. An empty
    payload is written only for a field with presence (a oneof member), as protobuf does."""
    if not len(payload) and not presence:
        return rest
    return b"".join((varint(number << 3 | LENGTH_DELIMITED), varint(len(payload)), payload, rest))


def leading_bytes_field(raw: bytes, number: int) -> tuple[memoryview, memoryview] | None:
    """When ``raw`` starts with field ``number`` as length-delimited bytes: its payload and
    what follows it, both views into ``raw`` (no copy); None for any other shape."""
    tag = read_varint(raw, 0)
    if tag is None or tag[0] != number << 3 | LENGTH_DELIMITED:
        return None
    length = read_varint(raw, tag[1])
    if length is None or length[1] + length[0] > len(raw):
        return None
    view = memoryview(raw)
    end = length[1] + length[0]
    return view[length[1] : end], view[end:]


# UploadStream: the gateway sends header messages and raw chunks; storage gets each chunk as
# a view into the bytes gRPC handed it.
UploadPart = storage_pb2.UploadStreamRequest | bytes | memoryview


def encode_upload_part(part: UploadPart) -> bytes:
    """A chunk of the image (bytes or a view) as UploadStreamRequest{data}, or a message."""
    if isinstance(part, storage_pb2.UploadStreamRequest):
        return part.SerializeToString()
    return bytes_field(UPLOAD_DATA_FIELD, part, presence=True)  # `data` is in a oneof


def decode_upload_part(raw: bytes) -> storage_pb2.UploadStreamRequest | memoryview:
    """A message that is only `data` comes back as a view of its bytes; anything else (the
    header, other shapes) is parsed by protobuf."""
    found = leading_bytes_field(raw, UPLOAD_DATA_FIELD)
    if found is not None and not found[1]:
        return found[0]
    return storage_pb2.UploadStreamRequest.FromString(raw)


@dataclass(frozen=True)
class ImageAnswer:
    """A GenerateResponse with its image held apart: ``meta`` has every other field."""

    image: Image
    meta: imagegen_pb2.GenerateResponse


def encode_generate_answer(answer: ImageAnswer | imagegen_pb2.GenerateResponse) -> bytes:
    if isinstance(answer, imagegen_pb2.GenerateResponse):
        return answer.SerializeToString()
    if answer.meta.image:
        raise ValueError("ImageAnswer.meta must not hold the image; it goes in ImageAnswer.image")
    return bytes_field(GENERATE_IMAGE_FIELD, answer.image, answer.meta.SerializeToString())


def decode_generate_answer(raw: bytes) -> ImageAnswer:
    found = leading_bytes_field(raw, GENERATE_IMAGE_FIELD)
    if found is None:
        meta = imagegen_pb2.GenerateResponse.FromString(raw)
        image: Image = meta.image
    else:
        image, rest = found
        meta = imagegen_pb2.GenerateResponse.FromString(bytes(rest))  # the small fields
        if meta.image:  # the field again later in the message: the last value wins
            image = meta.image  # (a later empty one cannot be told from none, and is not)
    meta.ClearField("image")
    return ImageAnswer(image, meta)


def upload_stream_method(channel: grpc.aio.Channel) -> grpc.aio.StreamUnaryMultiCallable:
    """StorageService.UploadStream taking UploadParts: chunks go out in one copy each."""
    return channel.stream_unary(
        "/storyshort.storage.v1.StorageService/UploadStream",
        request_serializer=encode_upload_part,
        response_deserializer=storage_pb2.UploadResponse.FromString,
    )


def generate_method(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable:
    """ImageGenService.Generate answering an ImageAnswer: the image a view of gRPC's bytes."""
    return channel.unary_unary(
        "/storyshort.imagegen.v1.ImageGenService/Generate",
        request_serializer=imagegen_pb2.GenerateRequest.SerializeToString,
        response_deserializer=decode_generate_answer,
    )
