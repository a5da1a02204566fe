"""SIGTERM grace, process by process, over the real processes: during the grace new calls
are refused with the code a client acts on (gRPC UNAVAILABLE; the gateway's 503 with
Retry-After while it drains), calls in flight finish with their real answer, and nothing
has to be posted again. A refusal is counted only with that code: a call that merely timed
out is not one."""

from __future__ import annotations

import io
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from storyshort.imagegen.v1 import imagegen_pb2, imagegen_pb2_grpc
from storyshort.status.v1 import status_pb2, status_pb2_grpc
from storyshort.storage.v1 import storage_pb2, storage_pb2_grpc
from tests.conftest import OWN_SUBCHANNELS, wait_until
from tests.e2e.helpers import MODEL, provider_env, scenes
from tests.fakes import openai_fake as fo
from tools.processes import System

pytestmark = pytest.mark.slow


def code_of_a_new_call(port: int, call: Callable[[grpc.Channel], object]) -> grpc.StatusCode:
    """The status code of a call on a new channel (OK when it succeeded)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=OWN_SUBCHANNELS) as channel:
        try:
            call(channel)
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            return code
    return grpc.StatusCode.OK


def refused_while_in_flight(
    system: System, name: str, call: Callable[[grpc.Channel], object], in_flight: grpc.Future
) -> None:
    """SIGTERM ``name``; assert a new call is then refused with UNAVAILABLE while the call
    in flight has not ended."""
    port = system.port(name)
    assert wait_until(lambda: code_of_a_new_call(port, call) is grpc.StatusCode.OK, timeout=10), "answered before"
    system.procs[name].send_signal(signal.SIGTERM)
    codes: list[grpc.StatusCode] = []

    def refused() -> bool:
        codes.append(code_of_a_new_call(port, call))
        return codes[-1] is grpc.StatusCode.UNAVAILABLE

    # Only UNAVAILABLE counts. A call that reaches the server in the instant it begins to stop
    # can be left unanswered until the probe's own deadline (DEADLINE_EXCEEDED), or be
    # cancelled by the stopping server as a call it had taken but not yet started
    # (CANCELLED; seen twice in CI runs): neither is a refusal, and the next probe (a new
    # connection, refused) is asked. An answer of any other kind fails the test.
    assert wait_until(refused, timeout=10), codes
    instant = {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
    assert set(codes) <= instant | {grpc.StatusCode.UNAVAILABLE}, codes
    assert codes.count(grpc.StatusCode.CANCELLED) <= 1, f"cancelled more than in the instant of the stop: {codes}"
    assert not in_flight.done(), "the call in flight had ended before a new call was refused"


def test_imagegen_refuses_new_calls_and_finishes_the_generation_in_flight(
    make_system: Callable[..., System], fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script(MODEL, fo.Ok(latency=3.0, size=(0, 0)))
    system = make_system(provider_env(fake_openai.base_url))
    proc = system.start("imagegen")
    with grpc.insecure_channel(f"127.0.0.1:{system.port('imagegen')}", options=OWN_SUBCHANNELS) as channel:
        stub = imagegen_pb2_grpc.ImageGenServiceStub(channel)
        in_flight = stub.Generate.future(
            imagegen_pb2.GenerateRequest(prompt="a lighthouse", size="1024x1024"), timeout=30
        )
        assert fake_openai.wait_for_requests(1, 10)
        refused_while_in_flight(
            system,
            "imagegen",
            lambda c: imagegen_pb2_grpc.ImageGenServiceStub(c).ListProviders(
                imagegen_pb2.ListProvidersRequest(), timeout=1
            ),
            in_flight,
        )
        answer = in_flight.result()
    assert answer.provider == MODEL and not answer.placeholder
    assert Image.open(io.BytesIO(answer.image)).size == (1024, 1024)
    assert proc.wait(timeout=15) == 0
    assert fake_openai.paid == ["a lighthouse"], "paid once: nothing to ask again"


def png(size: int = 256) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 40, 40)).save(out, "PNG")
    return out.getvalue()


def test_storage_refuses_new_calls_and_stores_the_upload_in_flight(make_system: Callable[..., System]) -> None:
    system = make_system()
    proc = system.start("storage")
    data = png()
    half = len(data) // 2
    rest, halfway = threading.Event(), threading.Event()

    def parts() -> Iterator[storage_pb2.UploadStreamRequest]:
        header = storage_pb2.UploadHeader(path="videos/g/scene-1.png", content_type="image/png", size=len(data))
        yield storage_pb2.UploadStreamRequest(header=header)
        yield storage_pb2.UploadStreamRequest(data=data[:half])
        halfway.set()
        rest.wait(30)  # the upload is in flight, half sent, over the signal
        yield storage_pb2.UploadStreamRequest(data=data[half:])

    with grpc.insecure_channel(f"127.0.0.1:{system.port('storage')}", options=OWN_SUBCHANNELS) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)  # connected before the signal
        in_flight = storage_pb2_grpc.StorageServiceStub(channel).UploadStream.future(parts(), timeout=30)
        assert halfway.wait(10), "the first half was never asked for"
        refused_while_in_flight(
            system,
            "storage",
            lambda c: storage_pb2_grpc.StorageServiceStub(c).GetPublicUrl(
                storage_pb2.GetPublicUrlRequest(path="videos/g/x.png"), timeout=1
            ),
            in_flight,
        )
        rest.set()
        answer = in_flight.result()
    assert answer.size == len(data) and answer.attempts == 1
    stored = Path(system.env["DATA_DIR"]) / "storage" / answer.bucket / answer.path
    assert stored.read_bytes() == data, "the object holds every byte sent"
    assert proc.wait(timeout=15) == 0


def test_status_refuses_new_calls_and_records_the_write_in_flight(make_system: Callable[..., System]) -> None:
    system = make_system()
    proc = system.start("status")
    database = Path(system.env["DATA_DIR"]) / "status.sqlite3"
    port = system.port("status")
    lock = sqlite3.connect(database, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # the store's writes wait (its busy timeout is 5 s)
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=OWN_SUBCHANNELS) as channel:
            # Connected first, so the call is on the wire before the signal (a call that had
            # not reached the server by then would be refused, not in flight).
            grpc.channel_ready_future(channel).result(timeout=10)
            request = status_pb2.CreateVideoRequest(video_id="graceful", scene_count=3)
            in_flight = status_pb2_grpc.StatusServiceStub(channel).CreateVideo.future(request, timeout=30)
            refused_while_in_flight(
                system,
                "status",
                # The health service: the store's one connection is busy with the write in
                # flight, so a store call would wait behind it.
                lambda c: health_pb2_grpc.HealthStub(c).Check(health_pb2.HealthCheckRequest(), timeout=1),
                in_flight,
            )
            lock.execute("COMMIT")
            answer = in_flight.result()
    finally:
        lock.close()
    assert answer.video_id == "graceful" and answer.scene_count == 3
    assert proc.wait(timeout=15) == 0
    system.start("status")
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=OWN_SUBCHANNELS) as channel:
        stored = status_pb2_grpc.StatusServiceStub(channel).GetVideo(
            status_pb2.GetVideoRequest(video_id="graceful"), timeout=10
        )
    assert stored.video.scene_count == 3 and not stored.degraded, "the write in flight was recorded"


def test_the_gateway_drains_then_finishes_what_is_in_flight(
    make_system: Callable[..., System], fake_openai: fo.FakeOpenAI
) -> None:
    """SHUTDOWN_DRAIN: after SIGTERM /readyz and new starts answer 503 (a start writes
    nothing), reads go on, event streams are cut without `end`; then the listener closes and
    the run in flight (a start waiting with Prefer: wait) ends with every scene's real image."""
    fake_openai.script(MODEL, fo.Ok(latency=6.0))
    system = make_system(provider_env(fake_openai.base_url, SHUTDOWN_DRAIN="4", PREFER_WAIT_MAX="60"))
    system.start_all()
    url = system.gateway_url
    waited: dict[str, Any] = {}
    frames: list[str] = []
    stream_open = threading.Event()

    def wait_for_the_run() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            body = {"videoId": "inflight", "scenes": scenes(3)}
            answer = client.post("/api/generate-preview-images", json=body, headers={"Prefer": "wait=60"})
            waited.update(status=answer.status_code, body=answer.json())

    def follow() -> None:
        with (
            httpx.Client(base_url=url, timeout=60) as client,
            client.stream("GET", "/api/videos/inflight/events") as stream,
        ):
            stream_open.set()
            for line in stream.iter_lines():
                frames.append(line)

    poster = threading.Thread(target=wait_for_the_run)
    poster.start()
    assert fake_openai.wait_for_requests(3, 20)
    follower = threading.Thread(target=follow)
    follower.start()
    assert stream_open.wait(10) and wait_until(lambda: any(f.startswith("event: status") for f in frames), 10)

    system.procs["gateway"].send_signal(signal.SIGTERM)
    with httpx.Client(base_url=url, timeout=10) as client:
        assert wait_until(lambda: client.get("/readyz").status_code == 503, timeout=3)
        ready = client.get("/readyz").json()
        refused = client.post("/api/generate-preview-images", json={"videoId": "late", "scenes": scenes(1)})
        read = client.get("/api/video-status", params={"videoId": "inflight"})
    follower.join(10)
    assert not follower.is_alive(), "the event stream was cut at the signal"
    assert ready["draining"] is True and ready["ready"] is False
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "UNAVAILABLE" and refused.json()["error"]["reason"] == "SHUTTING_DOWN"
    assert read.status_code == 200 and read.json()["status"] == "generating_images", "reads go on"
    assert "event: end" not in frames, "the run had not ended: a follower must reconnect, not stop"

    poster.join(30)
    assert waited["status"] == 200, waited
    results = waited["body"]["results"]
    assert [(r["scene"], r["isPlaceholder"]) for r in results] == [(1, False), (2, False), (3, False)]
    assert system.procs["gateway"].wait(timeout=20) == 0

    system.start("gateway")
    with httpx.Client(base_url=url, timeout=10) as client:
        after = client.get("/api/video-status", params={"videoId": "inflight"}).json()
        late = client.get("/api/video-status", params={"videoId": "late"})
    assert after["status"] == "assets_generated" and after["progress"] == 100
    assert late.status_code == 404, "a start refused while draining wrote nothing"
    assert sorted(fake_openai.paid) == sorted(s["prompt"] for s in scenes(3)), "nothing paid twice, nothing re-posted"
