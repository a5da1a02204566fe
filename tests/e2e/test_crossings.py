"""Features crossed with faults (issue "when mechanisms meet"): each case runs the whole
system as real processes with one feature on (the durable queue, signed-in users, imagegen
replicas on shared state, a spend cap, event-stream followers) and one fault (a hanging
model, Redis frozen, the status service frozen), and asserts the promise the meeting could
break: the healthy model served, the limit held, the cap held, no other user's data,
progress never backwards, nothing paid twice. (`make run` interrupted at any moment is
tests/test_run_local.py's.)"""

from __future__ import annotations

import collections
import json
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import metric, wait_until
from tests.e2e.helpers import poll_until_done, post, provider_env, scenes, start_worker
from tests.e2e.test_users import ALICE, BOB, as_user, auth, start, users_env  # noqa: F401  (auth: a fixture)
from tests.fakes import openai_fake as fo
from tests.fakes.jwks_fake import FakeAuth
from tests.redis_server import OwnRedis
from tools.processes import System, free_port

pytestmark = [pytest.mark.slow, pytest.mark.matrix]
HANG, OK = "gpt-image-2.5-sunburst", "gpt-image-2"


@dataclass
class Follower:
    """An event stream read in a thread, as a browser's EventSource reads it."""

    url: str
    video: str
    token: str = ""
    answers: list[dict[str, Any]] = field(default_factory=list)
    ends: list[dict[str, Any]] = field(default_factory=list)
    previews: list[dict[str, Any]] = field(default_factory=list)
    status_code: int = 0
    opened: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Follower:
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.opened.wait(20), "the stream answered"
        return self

    def _read(self) -> None:
        params = {"access_token": self.token} if self.token else {}
        timeout = httpx.Timeout(10, read=120)
        try:
            with (
                httpx.Client(base_url=self.url, timeout=timeout) as client,
                client.stream("GET", f"/api/videos/{self.video}/events", params=params) as stream,
            ):
                self.status_code = stream.status_code
                self.opened.set()
                event = ""
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: "):
                        data = json.loads(line.removeprefix("data: "))
                        # status answers, preview frames ({"scene", "url", "index"}) and the end
                        {"end": self.ends, "preview": self.previews}.get(event, self.answers).append(data)
                        if event == "end":
                            return
        finally:
            self.opened.set()

    def wait_end(self, timeout: float = 90) -> dict[str, Any]:
        assert self.thread is not None
        self.thread.join(timeout)
        assert self.ends, f"no end event; saw {self.answers[-1:] if self.answers else 'nothing'}"
        return self.ends[-1]

    def progress_never_went_back(self) -> None:
        progress = [a["progress"] for a in self.answers if not a["degraded"]]
        assert progress == sorted(progress), f"the stream went backwards: {progress}"


def paid_once(fake: fo.FakeOpenAI) -> None:
    counts = collections.Counter(fake.paid)
    assert all(n == 1 for n in counts.values()), f"paid twice: {counts}"


@pytest.fixture
def frozen() -> Iterator[list[Any]]:
    """Processes a test froze (SIGSTOP): thawed whatever happens."""
    stopped: list[Any] = []
    yield stopped
    for proc in stopped:
        proc.send_signal(signal.SIGCONT)


def test_a_hanging_model_with_the_queue_and_a_follower_every_scene_gets_the_healthy_model(
    make_system: Callable[..., System], fake_openai: fo.FakeOpenAI, pg_dsn: str
) -> None:
    """The queue worker runs six scenes on a lane of three through a chain whose first model
    hangs (its requests kept alive to catch a late image): every scene gets the healthy one,
    the follower's progress never goes back, nothing is paid twice."""
    fake_openai.script(HANG, fo.Hang())
    fake_openai.script(OK, fo.Ok(latency=0.1))
    system = make_system(
        provider_env(
            fake_openai.base_url,
            IMAGEGEN_CHAIN=f"{HANG},{OK}",
            IMAGE_GEN_TIMEOUT="4",
            IMAGEGEN_ATTEMPT_TIMEOUT="16",  # late requests outlive the calls
            IMAGEGEN_SAME_PROVIDER_RETRIES="0",
            STATUS_STORE="postgres",
            DATABASE_URL=pg_dsn,
            RUNS="queue",
            SCENE_CONCURRENCY="3",
        )
    )
    system.start_all()
    start_worker(system)
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        assert post(client, "hang-q", scenes(6)).status_code == 202
        follower = Follower(system.gateway_url, "hang-q").start()
        final = poll_until_done(client, "hang-q", timeout=60)[-1]
    assert follower.wait_end() == {}  # a run that ended
    assert final["status"] == "assets_generated"
    assert [i["provider"] for i in final["images"]] == [OK] * 6, final["images"]
    assert fake_openai.count(HANG) >= 1, "the hang was felt"
    follower.progress_never_went_back()
    assert follower.answers[-1]["status"] == "assets_generated"
    paid_once(fake_openai)


def test_two_replicas_hold_the_shared_limit_and_the_cap_while_redis_freezes(
    make_system: Callable[..., System], fake_openai: fo.FakeOpenAI, tmp_path: Path, frozen: list[Any]
) -> None:
    """Two imagegen replicas share a limit of 2 through Redis, under a daily cap with room
    for 10 images; Redis freezes mid-run until both find it dead, then answers again."""
    fake_openai.script(OK, fo.Ok(latency=0.3, usage=False))
    redis = OwnRedis()
    redis.start()
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({OK: {"per_image": {"*": {"*": 0.04}}}}))
    second, second_metrics = free_port(), free_port()
    try:
        system = make_system(
            provider_env(
                fake_openai.base_url,
                IMAGEGEN_CHAIN=OK,
                IMAGEGEN_CONCURRENCY="2",
                IMAGEGEN_SHARED_STATE=redis.url,
                IMAGEGEN_SHARED_TIMEOUT="100ms",
                IMAGEGEN_SHARED_PING_TIMEOUT="300ms",
                IMAGEGEN_PRICES_FILE=str(prices),
                BUDGET_DAILY_USD="0.4",
                SCENE_CONCURRENCY="2",
            )
        )
        system.env["IMAGEGEN_ADDR"] = f"ipv4:127.0.0.1:{system.port('imagegen')},127.0.0.1:{second}"
        system.start_all()
        system.start_replica(
            "imagegen-2",
            "services.imagegen",
            {"IMAGEGEN_PORT": str(second), "IMAGEGEN_METRICS_PORT": str(second_metrics)},
            port=second,
        )
        metrics = [system.metrics_port("imagegen"), second_metrics]

        def replicas(name: str) -> list[float]:
            return [metric(f"http://127.0.0.1:{port}/metrics", name) for port in metrics]

        assert wait_until(lambda: replicas("storyshort_imagegen_shared_state_replicas") == [2, 2], timeout=15)
        with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
            for video in ("cap-1", "cap-2"):
                assert post(client, video, scenes(8, word=video)).status_code == 202
            assert fake_openai.wait_for_requests(2, timeout=20)
            assert redis.proc is not None
            frozen.append(redis.proc)
            redis.freeze()
            assert wait_until(lambda: replicas("storyshort_imagegen_shared_state_up") == [0, 0], timeout=15)
            redis.thaw()
            finals = [poll_until_done(client, video, timeout=90)[-1] for video in ("cap-1", "cap-2")]
    finally:
        redis.kill()
    assert fake_openai.max_in_flight[OK] <= 2, fake_openai.max_in_flight  # the limit held
    paid = [i for f in finals for i in f["images"] if not i["placeholder"]]
    assert len(paid) == fake_openai.count(OK) <= 10, (len(paid), fake_openai.count(OK))  # the cap held
    assert all(i["reason"] == "budget" for f in finals for i in f["images"] if i["placeholder"])
    assert sum(f["spendUsd"] for f in finals) <= 0.4 + 1e-9
    paid_once(fake_openai)


def test_with_the_status_service_frozen_a_stream_stays_its_owners_on_every_gateway(
    make_system: Callable[..., System],
    fake_openai: fo.FakeOpenAI,
    auth: FakeAuth,  # noqa: F811
    frozen: list[Any],
) -> None:
    """Alice follows her video on gateway 1 while the status service freezes mid-run: her
    stream goes on (degraded answers of her own video) and ends once it answers again. Bob,
    during the freeze, gets the 404 of a missing video on gateway 1 (it remembers whose it is)
    and 503 on gateway 2 (it cannot know): never a frame of Alice's video."""
    fake_openai.script(OK, fo.Ok(latency=0.5))
    system = make_system(users_env(fake_openai, auth, SCENE_CONCURRENCY="1", STATUS_TIMEOUT="0.5"))
    system.start_all()
    other = free_port()
    system.start_replica("gateway-2", "gateway", {"GATEWAY_PORT": str(other)}, port=other)
    alice, bob = auth.token(ALICE), auth.token(BOB, key=auth.keys[1])
    with httpx.Client(base_url=system.gateway_url, timeout=20) as client:
        assert start(client, alice, "stream-1", n=4).status_code == 202
        hers = Follower(system.gateway_url, "stream-1", alice).start()
        assert hers.status_code == 200
        assert fake_openai.wait_for_requests(2, timeout=20)
        status = system.procs["status"]
        frozen.append(status)
        status.send_signal(signal.SIGSTOP)
        strangers = [
            Follower(system.gateway_url, "stream-1", bob).start(),
            Follower(f"http://127.0.0.1:{other}", "stream-1", bob).start(),
        ]
        status.send_signal(signal.SIGCONT)
        end = hers.wait_end(timeout=120)
    assert end == {}, end  # a run that ended, not a stream cut short
    assert hers.answers[-1]["status"] == "assets_generated" and not hers.answers[-1]["degraded"]
    hers.progress_never_went_back()
    assert [s.status_code for s in strangers] == [404, 503]
    assert all(s.answers == [] and s.previews == [] for s in strangers), "no frame of another user's video"
    paid_once(fake_openai)


def test_the_queue_finishes_a_run_the_status_service_froze_in_the_middle_of(
    make_system: Callable[..., System], fake_openai: fo.FakeOpenAI, pg_dsn: str, frozen: list[Any]
) -> None:
    """The worker's scene reports fail while the status service is frozen, are recorded once
    it answers, and the run ends assets_generated; no scene is paid twice."""
    fake_openai.script(OK, fo.Ok(latency=0.3))
    system = make_system(
        provider_env(
            fake_openai.base_url,
            STATUS_STORE="postgres",
            DATABASE_URL=pg_dsn,
            RUNS="queue",
            SCENE_CONCURRENCY="2",
            STATUS_TIMEOUT="0.5",
        )
    )
    system.start_all()
    worker_metrics = start_worker(system)
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        assert post(client, "frozen-q", scenes(6)).status_code == 202
        assert fake_openai.wait_for_requests(2, timeout=20)
        status = system.procs["status"]
        frozen.append(status)
        status.send_signal(signal.SIGSTOP)
        deferred = f"http://127.0.0.1:{worker_metrics}/metrics"
        felt = wait_until(lambda: metric(deferred, "storyshort_gateway_scene_results_total", how="deferred") >= 1, 30)
        status.send_signal(signal.SIGCONT)
        assert felt, "a report failed while the status service was frozen"
        final = poll_until_done(client, "frozen-q", timeout=90)[-1]
    assert final["status"] == "assets_generated" and len(final["images"]) == 6
    assert fake_openai.count(OK) == 6
    paid_once(fake_openai)
