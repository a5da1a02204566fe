"""hypothesis-generated requests to every RPC of the three real servers (odd strings, huge
fields, missing fields, path traversal): always a defined status code, never INTERNAL or
UNKNOWN, and nothing written outside the storage root."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.channels import CHANNEL_OPTIONS
from services.common.server import Registration, RunningServer, start_server
from storyshort.imagegen.v1 import imagegen_pb2, imagegen_pb2_grpc
from storyshort.status.v1 import status_pb2, status_pb2_grpc
from storyshort.storage.v1 import storage_pb2, storage_pb2_grpc
from tests.common.test_runtime import registrations
from tests.fakes.images import image_bytes

pytestmark = pytest.mark.slow
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

odd_text = st.one_of(
    st.text(max_size=300),
    st.sampled_from(
        [
            "",
            "..",
            "../..",
            "/etc/passwd",
            "a/../../b",
            "a\x00b",
            "\u202e",
            "videos/../../x.png",
            "x" * 5000,
            "C:\\\\win",
            "%2e%2e/%2e%2e",
            "videos//x.png",
            " ",
            "\n",
        ]
    ),
)
ints = st.one_of(st.integers(min_value=-(2**31), max_value=2**31 - 1), st.sampled_from([0, 1, -1, 100, 101]))
blobs = st.one_of(st.binary(max_size=2048), st.just(image_bytes("PNG")), st.just(image_bytes("JPEG")))


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """imagegen, storage and status on one loopback port, in a thread with its own loop."""
    root = tmp_path_factory.mktemp("fuzz")
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, RunningServer] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)

        async def start() -> None:
            regs: list[Registration] = registrations(root)
            holder["server"] = await start_server("127.0.0.1", 0, regs)
            ready.set()

        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(20)
    yield holder["server"].port, root
    asyncio.run_coroutine_threadsafe(holder["server"].server.stop(0), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def call(port: int, stub_cls: type, method: str, request: object) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
        try:
            getattr(stub_cls(channel), method)(request, timeout=20)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            return code


def files_outside_storage(root: Path) -> list[Path]:
    storage = (root / "s").resolve()
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and not p.resolve().is_relative_to(storage) and not p.name.startswith("s.db")
    ]


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@FUZZ
@given(
    prompt=odd_text,
    size=odd_text,
    video_id=odd_text,
    scene=ints,
    quality=odd_text,
    parallelism=st.one_of(st.integers(min_value=0, max_value=2**32 - 1), st.sampled_from([0, 1, 64, 65])),
)
def test_imagegen_generate(
    servers: tuple[int, Path], prompt: str, size: str, video_id: str, scene: int, quality: str, parallelism: int
) -> None:
    port, _root = servers
    request = imagegen_pb2.GenerateRequest(
        prompt=prompt, size=size, video_id=video_id, scene=scene, quality=quality, video_parallelism=parallelism
    )
    assert call(port, imagegen_pb2_grpc.ImageGenServiceStub, "Generate", request) not in NEVER


@FUZZ
@given(
    bucket=odd_text,
    path=odd_text,
    data=blobs,
    content_type=st.one_of(odd_text, st.sampled_from(["image/png", "image/jpeg", "image/webp"])),
)
def test_storage_upload(servers: tuple[int, Path], bucket: str, path: str, data: bytes, content_type: str) -> None:
    port, root = servers
    request = storage_pb2.UploadRequest(bucket=bucket, path=path, data=data, content_type=content_type)
    assert call(port, storage_pb2_grpc.StorageServiceStub, "Upload", request) not in NEVER
    request2 = storage_pb2.GetPublicUrlRequest(bucket=bucket, path=path)
    assert call(port, storage_pb2_grpc.StorageServiceStub, "GetPublicUrl", request2) not in NEVER
    assert (
        call(port, storage_pb2_grpc.StorageServiceStub, "EnsureBucket", storage_pb2.EnsureBucketRequest(bucket=bucket))
        not in NEVER
    )
    assert files_outside_storage(root) == []


@st.composite
def upload_streams(draw: st.DrawFn) -> list[storage_pb2.UploadStreamRequest]:
    """A header (odd fields, a size that may not match) and data in random cuts; sometimes
    a second header, or data first."""
    data = draw(blobs)
    header = storage_pb2.UploadHeader(
        bucket=draw(st.one_of(st.just(""), odd_text)),
        path=draw(st.one_of(st.just("videos/v/images/scene-1.png"), odd_text)),
        content_type=draw(st.one_of(odd_text, st.sampled_from(["image/png", "image/jpeg"]))),
        size=draw(st.one_of(st.just(len(data)), st.integers(min_value=-(2**63), max_value=2**63 - 1))),
    )
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=6)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    messages = [storage_pb2.UploadStreamRequest(header=header)]
    messages += [storage_pb2.UploadStreamRequest(data=piece) for piece in pieces]
    if draw(st.booleans()):
        at = draw(st.integers(min_value=0, max_value=len(messages)))
        messages.insert(at, storage_pb2.UploadStreamRequest(header=header))
    return messages


@FUZZ
@given(messages=upload_streams())
def test_storage_upload_stream(servers: tuple[int, Path], messages: list[storage_pb2.UploadStreamRequest]) -> None:
    port, root = servers
    assert call(port, storage_pb2_grpc.StorageServiceStub, "UploadStream", iter(messages)) not in NEVER
    assert files_outside_storage(root) == []
    assert [p for p in (root / "s").rglob("*.tmp")] == []  # a refused stream leaves no temp file


scene_results = st.builds(
    status_pb2.SceneResult,
    scene=ints,
    state=st.one_of(odd_text, st.sampled_from(["stored", "failed"])),
    url=odd_text,
    path=odd_text,
    content_type=odd_text,
    placeholder=st.booleans(),
    provider=odd_text,
    attempts=ints,
    error=odd_text,
)


@FUZZ
@given(
    video_id=odd_text,
    count=ints,
    status=st.one_of(odd_text, st.sampled_from(["draft", "generating_images", "assets_generated", "failed"])),
    progress=ints,
    scene=scene_results,
    fields=st.sets(st.sampled_from(["status", "progress", "scene_count", "error"])),
)
def test_status_rpcs(
    servers: tuple[int, Path],
    video_id: str,
    count: int,
    status: str,
    progress: int,
    scene: status_pb2.SceneResult,
    fields: set[str],
) -> None:
    port, _root = servers
    stub = status_pb2_grpc.StatusServiceStub
    values: dict[str, Any] = {"status": status, "progress": progress, "scene_count": count, "error": status}
    update = status_pb2.UpdateVideoRequest(video_id=video_id, **{k: values[k] for k in fields})
    for method, request in [
        ("CreateVideo", status_pb2.CreateVideoRequest(video_id=video_id, scene_count=count)),
        ("StartVideo", status_pb2.StartVideoRequest(video_id=video_id, scene_count=count)),
        ("GetVideo", status_pb2.GetVideoRequest(video_id=video_id)),
        ("UpdateVideo", update),
        ("ReportScene", status_pb2.ReportSceneRequest(video_id=video_id, scene=scene)),
        ("ReportScene", status_pb2.ReportSceneRequest(video_id=video_id, scene=scene, then=update)),
        ("ReportScene", status_pb2.ReportSceneRequest(video_id=video_id)),
        ("ListStalledVideos", status_pb2.ListStalledVideosRequest()),
    ]:
        assert call(port, stub, method, request) not in NEVER, (method, request)
