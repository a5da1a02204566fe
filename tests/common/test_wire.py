"""The image fields written and read by hand (services/common/wire.py) against protobuf's own
encoding: the same bytes out, the same message back, and anything unusual left to protobuf.
Then both services over real gRPC: the generated stubs (what grpcurl and other callers use)
and the gateway's hand-coded calls get the same answers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from gateway.clients import upload_chunks
from services.common import wire
from services.common.server import Registration
from services.imagegen.call import ChainPolicy
from services.imagegen.chain import ProviderChain
from services.imagegen.providers.placeholder import PlaceholderProvider
from services.imagegen.servicer import SERVICE as IMAGEGEN
from services.imagegen.servicer import ImageGenServicer
from services.storage.backends.local import LocalBackend
from services.storage.servicer import SERVICE as STORAGE
from services.storage.servicer import StorageServicer
from services.storage.uploader import Uploader
from storyshort.imagegen.v1 import imagegen_pb2, imagegen_pb2_grpc
from storyshort.storage.v1 import storage_pb2, storage_pb2_grpc
from tests.conftest import grpc_server
from tests.fakes.images import noisy_png

payloads = st.binary(max_size=4096) | st.sampled_from(
    [b"\x00" * 127, b"\x01" * 128, b"\x02" * 16384, b"\x03" * 2097153]
)
texts = st.text(max_size=40)


def meta_strategy() -> st.SearchStrategy[imagegen_pb2.GenerateResponse]:
    attempt = st.builds(
        imagegen_pb2.Attempt,
        provider=texts,
        reason=texts,
        duration_ms=st.integers(0, 2**31 - 1),
        cost_usd=st.floats(0, 100),
        cost_known=st.booleans(),
    )
    return st.builds(
        imagegen_pb2.GenerateResponse,
        content_type=texts,
        extension=texts,
        width=st.integers(-(2**31), 2**31 - 1),
        height=st.integers(0, 4096),
        provider=texts,
        placeholder=st.booleans(),
        attempts=st.lists(attempt, max_size=3),
        cost_usd=st.floats(allow_nan=False),
        cost_known=st.booleans(),
    )


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**21, 5 * 1024 * 1024, 2**63])
def test_varints_read_back_what_was_written(value: int) -> None:
    encoded = wire.varint(value)
    assert wire.read_varint(encoded + b"tail", 0) == (value, len(encoded))


def test_a_varint_cut_short_or_too_long_is_not_read() -> None:
    assert wire.read_varint(wire.varint(300)[:1], 0) is None
    assert wire.read_varint(b"\xff" * 11, 0) is None


@given(payloads)
def test_a_chunk_is_encoded_as_protobuf_encodes_it_and_decoded_as_a_view(payload: bytes) -> None:
    reference = storage_pb2.UploadStreamRequest(data=payload).SerializeToString()
    assert wire.encode_upload_part(payload) == reference
    assert wire.encode_upload_part(memoryview(payload)) == reference
    decoded = wire.decode_upload_part(reference)
    assert isinstance(decoded, memoryview) and bytes(decoded) == payload


def test_the_header_and_other_shapes_are_left_to_protobuf() -> None:
    empty = wire.decode_upload_part(b"")  # no part at all: the servicer refuses it
    assert isinstance(empty, storage_pb2.UploadStreamRequest) and empty.WhichOneof("part") is None
    header = storage_pb2.UploadStreamRequest(header=storage_pb2.UploadHeader(path="a/b.png", size=3))
    assert wire.encode_upload_part(header) == header.SerializeToString()
    assert wire.decode_upload_part(header.SerializeToString()) == header
    # data, then a header: protobuf's oneof keeps the last, so the message is a header.
    both = wire.encode_upload_part(b"abc") + header.SerializeToString()
    decoded = wire.decode_upload_part(both)
    assert isinstance(decoded, storage_pb2.UploadStreamRequest) and decoded.WhichOneof("part") == "header"
    # data twice: the last value wins, as protobuf has it.
    twice = wire.encode_upload_part(b"first") + wire.encode_upload_part(b"second")
    decoded = wire.decode_upload_part(twice)
    assert isinstance(decoded, storage_pb2.UploadStreamRequest) and decoded.data == b"second"


@pytest.mark.parametrize(
    "raw",
    [b"\x12\x05abc", b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x12"],
    ids=["short", "varint", "cut"],
)
def test_a_broken_message_fails_as_protobuf_fails_it(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        storage_pb2.UploadStreamRequest.FromString(raw)
    with pytest.raises(DecodeError):
        wire.decode_upload_part(raw)


@given(payloads, meta_strategy())
def test_an_image_answer_is_protobufs_own_bytes_and_reads_back(
    image: bytes, meta: imagegen_pb2.GenerateResponse
) -> None:
    whole = imagegen_pb2.GenerateResponse()
    whole.CopyFrom(meta)
    whole.image = image
    encoded = wire.encode_generate_answer(wire.ImageAnswer(memoryview(image), meta))
    assert encoded == whole.SerializeToString()
    assert wire.encode_generate_answer(whole) == encoded  # a whole message passes through
    answer = wire.decode_generate_answer(encoded)
    assert bytes(answer.image) == image and answer.meta == meta and not answer.meta.image


def test_an_answer_in_another_field_order_reads_as_protobuf_reads_it() -> None:
    meta = imagegen_pb2.GenerateResponse(provider="m", width=3).SerializeToString()
    image = imagegen_pb2.GenerateResponse(image=b"img").SerializeToString()
    later = imagegen_pb2.GenerateResponse(image=b"later").SerializeToString()
    for raw, expected in ((meta + image, b"img"), (image + meta + later, b"later"), (meta, b"")):
        answer = wire.decode_generate_answer(raw)
        assert bytes(answer.image) == expected and answer.meta.provider == "m" and not answer.meta.image
    with pytest.raises(ValueError, match="must not hold the image"):
        wire.encode_generate_answer(wire.ImageAnswer(b"x", imagegen_pb2.GenerateResponse(image=b"y")))


async def test_upload_stream_serves_the_gateway_and_the_generated_stub_alike(tmp_path: Path) -> None:
    image = noisy_png(1_500_000)
    uploader = Uploader(LocalBackend(tmp_path, "http://gw"), "renders-images")
    reg = Registration(storage_pb2_grpc.add_StorageServiceServicer_to_server, StorageServicer(uploader), STORAGE)
    async with grpc_server(reg) as (_running, channel):
        ours = await wire.upload_stream_method(channel)(iter(upload_chunks("v/a.png", image, "image/png")), timeout=20)
        messages = [
            storage_pb2.UploadStreamRequest(
                header=storage_pb2.UploadHeader(path="v/b.png", content_type="image/png", size=len(image))
            ),
            *(storage_pb2.UploadStreamRequest(data=image[i : i + 100_000]) for i in range(0, len(image), 100_000)),
        ]
        stub = await storage_pb2_grpc.StorageServiceStub(channel).UploadStream(iter(messages), timeout=20)
        # A chunk that is not data (a second header) is refused with a message, not a crash.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await storage_pb2_grpc.StorageServiceStub(channel).UploadStream(
                iter(messages[:2] + messages[:1]), timeout=20
            )
    assert ours.sha256 == stub.sha256 == hashlib.sha256(image).hexdigest()
    assert (
        (tmp_path / "renders-images/v/a.png").read_bytes()
        == image
        == (tmp_path / "renders-images/v/b.png").read_bytes()
    )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "only the first message is a header" in (caught.value.details() or "")


async def test_generate_answers_the_gateway_and_the_generated_stub_alike() -> None:
    chain = ProviderChain([], PlaceholderProvider(), ChainPolicy())
    reg = Registration(imagegen_pb2_grpc.add_ImageGenServiceServicer_to_server, ImageGenServicer(chain, 60), IMAGEGEN)
    request = imagegen_pb2.GenerateRequest(prompt="a lighthouse at dusk", size="512x512")
    async with grpc_server(reg) as (_running, channel):
        ours = await wire.generate_method(channel)(request, timeout=20)
        theirs = await imagegen_pb2_grpc.ImageGenServiceStub(channel).Generate(request, timeout=20)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await wire.generate_method(channel)(imagegen_pb2.GenerateRequest(prompt=""), timeout=20)
    assert isinstance(ours.image, memoryview) and bytes(ours.image) == theirs.image
    assert ours.meta.provider == theirs.provider == "placeholder" and ours.meta.placeholder
    assert (ours.meta.width, ours.meta.height, ours.meta.content_type) == (512, 512, theirs.content_type)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
