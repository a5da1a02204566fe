"""Video runs as durable jobs (RUNS=queue) on the real PostgreSQL: two gateways, two
workers, ten videos; one worker killed mid-run. Every video reaches assets_generated, each
scene is paid for once, and no video runs twice at the same time."""

from __future__ import annotations

import collections
import itertools
import json
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime

import httpx
import pytest

from tests.conftest import logs_of, wait_until
from tests.e2e.helpers import MODEL, poll_until_done, post, provider_env, scenes, start_worker
from tests.fakes import openai_fake as fo
from tests.fakes.tcp_proxy import FaultyProxy
from tools.processes import System, free_port

pytestmark = pytest.mark.slow


def queue_system(
    make_system: Callable[..., System], fake_openai: fo.FakeOpenAI, dsn: str, **env: str
) -> tuple[System, list[str]]:
    system = make_system(
        provider_env(
            fake_openai.base_url,
            STATUS_STORE="postgres",
            DATABASE_URL=dsn,
            RUNS="queue",
            WORKER_STALLED_AFTER="3",
            WORKER_CONCURRENCY="3",
            SCENE_CONCURRENCY="2",
            **env,
        )
    )
    system.start_all()
    second = free_port()
    system.start_replica("gateway-2", "gateway", {"GATEWAY_PORT": str(second)}, port=second)
    for n in (1, 2):
        system.env[f"WORKER_{n}_METRICS_PORT"] = str(start_worker(system, f"worker-{n}"))
    return system, [system.gateway_url, f"http://127.0.0.1:{second}"]


def run_intervals(system: System, workers: list[str], killed: dict[str, float]) -> dict[str, list[tuple[float, float]]]:
    """Per video, when each run held it: from 'run started' to its 'run summary' (or the kill)."""
    spans: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for worker in workers:
        open_runs: dict[str, float] = {}
        for line in logs_of(system, worker).splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            at = datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()
            if entry.get("msg") == "run started":
                open_runs[entry["video_id"]] = at
            elif entry.get("msg") == "run summary" and entry["video_id"] in open_runs:
                spans[entry["video_id"]].append((open_runs.pop(entry["video_id"]), at))
        for video, began in open_runs.items():
            spans[video].append((began, killed.get(worker, time.time())))
    return spans


def test_ten_videos_through_two_gateways_survive_a_killed_worker(
    make_system: Callable[..., System], pg_dsn: str, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script(MODEL, fo.Ok(latency=0.3))
    system, gateways = queue_system(make_system, fake_openai, pg_dsn)
    clients = [httpx.Client(base_url=url, timeout=10) for url in gateways]
    for v in range(10):
        answer = post(clients[v % 2], f"q{v}", scenes(4, word=f"video {v}"))
        assert answer.status_code == 202, answer.text
    assert fake_openai.wait_for_requests(6, timeout=30)
    victim = system.procs["worker-1"]
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    killed = {"worker-1": time.time()}
    finals = [poll_until_done(clients[v % 2], f"q{v}", timeout=120)[-1] for v in range(10)]
    for c in clients:
        c.close()
    system.stop_all()
    assert [f["status"] for f in finals] == ["assets_generated"] * 10
    assert all(len(f["images"]) == 4 and not any(i["placeholder"] for i in f["images"]) for f in finals)
    paid = collections.Counter(fake_openai.paid)
    assert len(paid) == 40 and set(paid.values()) == {1}, f"paid twice: {[p for p, n in paid.items() if n > 1]}"
    assert "retrying the job of a stalled worker" in logs_of(system, "worker-2")
    spans = run_intervals(system, ["worker-1", "worker-2"], killed)
    assert len(spans) == 10
    for video, runs in spans.items():
        runs.sort()
        for (_, end), (start, _) in itertools.pairwise(runs):
            assert start >= end, f"{video} ran twice at the same time: {runs}"


def test_two_posts_at_once_through_two_gateways_queue_one_job(
    make_system: Callable[..., System], pg_dsn: str, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script(MODEL, fo.Ok(latency=1.0))
    system, gateways = queue_system(make_system, fake_openai, pg_dsn)
    answers: list[httpx.Response] = []
    threads = [
        threading.Thread(
            target=lambda url=url: answers.append(
                httpx.post(
                    f"{url}/api/generate-preview-images", json={"videoId": "same", "scenes": scenes(3)}, timeout=10
                )
            )
        )
        for url in gateways
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.status_code for a in answers) == [202, 202]
    assert sorted(a.json()["alreadyRunning"] for a in answers) == [False, True]
    with httpx.Client(base_url=gateways[0], timeout=10) as client:
        assert fake_openai.wait_for_requests(1, timeout=30)  # the job is running (each image takes 1 s)
        conflict = post(client, "same", scenes(3, word="other"))
        assert conflict.status_code == 409, conflict.text  # other scenes while it runs
        assert conflict.json()["error"]["code"] == "ALREADY_EXISTS"
        assert poll_until_done(client, "same")[-1]["status"] == "assets_generated"
        assert post(client, "same", scenes(3, word="other")).status_code == 202  # once done, a new run
        assert poll_until_done(client, "same")[-1]["status"] == "assets_generated"
    system.stop_all()
    assert collections.Counter(fake_openai.paid).most_common(1)[0][1] == 1
    # The later run's prompts differ: each new prompt is paid once, the old ones never again.
    assert len(fake_openai.paid) == 6


def test_a_worker_stops_on_sigterm_even_with_its_database_down(make_system: Callable[..., System], pg_dsn: str) -> None:
    """SIGTERM stops a worker gracefully (exit 0, at once when it has no job). With the
    queue's PostgreSQL down, each of procrastinate's stopping steps would wait for a
    connection (it waited out every grace it was given); the worker now gives up
    SHUTDOWN_GRACE + STOP_MARGIN after the signal and exits 1, saying why. Its jobs are left
    to the other workers' stalled-job recovery, as after a kill."""
    from gateway.worker import STOP_MARGIN

    with FaultyProxy(("127.0.0.1", 5432)) as proxy:
        through = proxy.dsn(pg_dsn)
        assert through != pg_dsn
        system = make_system({"RUNS": "queue", "DATABASE_URL": through, "SHUTDOWN_GRACE": "1"})
        for name in ("worker-up", "worker-down"):
            start_worker(system, name)

        healthy = system.procs["worker-up"]
        healthy.send_signal(signal.SIGTERM)
        assert healthy.wait(timeout=20) == 0
        assert "worker stopped" in logs_of(system, "worker-up")

        proxy.refusing = True  # PostgreSQL down: connections refused, the open ones cut
        proxy.kill_connections()
        down = system.procs["worker-down"]
        signalled = time.monotonic()
        down.send_signal(signal.SIGTERM)
        assert down.wait(timeout=1 + STOP_MARGIN + 20) == 1
        assert time.monotonic() - signalled >= 1 + STOP_MARGIN - 0.5  # the grace was given first
        assert "did not stop in time" in logs_of(system, "worker-down")


@pytest.mark.matrix
def test_a_post_while_the_queue_database_hangs_is_a_503_in_time_and_the_same_post_works_after(
    make_system: Callable[..., System], pg_dsn: str, fake_openai: fo.FakeOpenAI
) -> None:
    """Through the gateway: the start hung without end with the queue's PostgreSQL frozen
    (the client gave up after 60 s), and once the pool had given up, answered 500 and reset
    the connection. Now 503 UNAVAILABLE (QUEUE_UNAVAILABLE, Retry-After) within QUEUE_TIMEOUT,
    the connection still serves, and the same POST after the thaw starts the video and a
    worker runs it to the end."""
    fake_openai.script(MODEL, fo.Ok(latency=0.05))
    with FaultyProxy(("127.0.0.1", 5432)) as proxy:
        through = proxy.dsn(pg_dsn)
        system = make_system(provider_env(fake_openai.base_url, RUNS="queue", DATABASE_URL=through, QUEUE_TIMEOUT="1"))
        system.start_all()
        with httpx.Client(base_url=system.gateway_url, timeout=30) as client:
            proxy.freeze()
            started = time.monotonic()
            refused = post(client, "q-frozen", scenes(2))
            took = time.monotonic() - started
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["reason"] == "QUEUE_UNAVAILABLE"
            assert refused.headers["Retry-After"] == "5"
            assert took < 1 + 4, f"answered after {took:.1f} s"
            assert client.get("/healthz").status_code == 200  # the same connection, still served
            ready = client.get("/readyz")  # starts answer 503: not ready, and it says why
            assert ready.status_code == 503, ready.text  # (no new connection in time, or no answer)
            assert ready.json()["services"]["queue"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED"), ready.text
            proxy.thaw()
            assert wait_until(lambda: client.get("/readyz").status_code == 200, timeout=30, every=0.2)
            again = post(client, "q-frozen", scenes(2))
            assert again.status_code == 202 and again.json()["alreadyRunning"] is False, again.text
            start_worker(system)
            seen = poll_until_done(client, "q-frozen", timeout=60)
            assert seen[-1]["status"] == "assets_generated", seen[-1]
    assert sorted(fake_openai.paid) == sorted(s["prompt"] for s in scenes(2))  # each scene paid once


@pytest.mark.matrix
def test_a_gateway_starts_and_serves_reads_with_the_queue_database_down_and_a_worker_says_why_it_stops(
    make_system: Callable[..., System], pg_dsn: str, fake_openai: fo.FakeOpenAI
) -> None:
    """The gateway failed its start after procrastinate's 30 s wait for the database (a
    traceback), so its reads were gone too. Now it starts: reads are served, starts answer
    503 QUEUE_UNAVAILABLE, and once the database is back the first start makes procrastinate's
    schema (the database is fresh) and the video runs. A worker has nothing to do without
    the database: it exits 1 saying so, not with a traceback."""
    fake_openai.script(MODEL, fo.Ok(latency=0.05))
    with FaultyProxy(("127.0.0.1", 5432)) as proxy:
        proxy.refusing = True
        through = proxy.dsn(pg_dsn)
        system = make_system(provider_env(fake_openai.base_url, RUNS="queue", DATABASE_URL=through, QUEUE_TIMEOUT="1"))
        worker = system.start_replica("worker", "gateway.worker", {"WORKER_METRICS_PORT": "0"}, port=None)
        system.start_all()
        with httpx.Client(base_url=system.gateway_url, timeout=30) as client:
            assert client.get("/api/video-status", params={"videoId": "nobody"}).status_code == 404  # reads served
            refused = post(client, "q-late", scenes(2))
            assert refused.status_code == 503 and refused.json()["error"]["reason"] == "QUEUE_UNAVAILABLE", refused.text
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["services"]["queue"] == "UNAVAILABLE", ready.text
            assert worker.wait(timeout=90) == 1
            said = logs_of(system, "worker")
            assert "cannot reach the queue's database" in said and "Traceback" not in said, said[-2000:]
            proxy.refusing = False
            answers: list[httpx.Response] = []

            def started() -> bool:  # as a client after Retry-After: the first start makes the schema
                answers.append(post(client, "q-late", scenes(2)))
                return answers[-1].status_code == 202

            assert wait_until(started, timeout=60, every=1.0), answers[-1].text
            assert all(a.json()["error"]["reason"] == "QUEUE_UNAVAILABLE" for a in answers[:-1])
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["services"]["queue"] == "SERVING", ready.text
            start_worker(system)
            seen = poll_until_done(client, "q-late", timeout=60)
            assert seen[-1]["status"] == "assets_generated", seen[-1]


@pytest.mark.matrix
@pytest.mark.parametrize("runs", ["local", "queue"])
def test_a_start_while_the_status_service_is_frozen_names_the_status_service(
    make_system: Callable[..., System], pg_dsn: str, fake_openai: fo.FakeOpenAI, runs: str
) -> None:
    """With the status service frozen (SIGSTOP), a start answered 504 "Deadline Exceeded"
    (gRPC's own words) in-process, and with RUNS=queue a 503 that blamed the queue's
    database (QUEUE_UNAVAILABLE: the status call's time was counted as the queue's, and the
    gateway's status breaker never heard of it); every later start waited STATUS_TIMEOUT
    again. Now the first says that the status service did not answer, after its own
    STATUS_TIMEOUT; the next ones, the breaker open, are refused at once (503, Retry-After);
    once it answers again the same POST starts."""
    fake_openai.script(MODEL, fo.Ok(latency=0.05))
    queue = {"RUNS": "queue", "DATABASE_URL": pg_dsn} if runs == "queue" else {}
    system = make_system(provider_env(fake_openai.base_url, STATUS_TIMEOUT="4", QUEUE_TIMEOUT="1", **queue))
    system.start_all()
    status = system.procs["status"]
    with httpx.Client(base_url=system.gateway_url, timeout=30) as client:
        assert post(client, "warm", scenes(1)).status_code == 202  # the queue's schema made
        status.send_signal(signal.SIGSTOP)
        try:
            refused = post(client, "q-status", scenes(2))
            started = time.monotonic()
            again = post(client, "q-status", scenes(2))
            took = time.monotonic() - started
            bad = post(client, "q-status", [{"prompt": ""}])  # bad input is told so, whatever is down
        finally:
            status.send_signal(signal.SIGCONT)
        assert refused.status_code == 504, refused.text
        error = refused.json()["error"]
        assert error["code"] == "DEADLINE_EXCEEDED" and error["reason"] != "QUEUE_UNAVAILABLE", error
        assert error["message"] == "the status service did not answer in time; try again", error
        assert again.status_code == 503 and again.headers["Retry-After"] == "1", again.text
        assert again.json()["error"]["message"].startswith("the status service is not answering"), again.text
        assert took < 2.0, f"refused after {took:.1f} s: it waited STATUS_TIMEOUT (4 s) again"
        assert bad.status_code == 400, bad.text
        if runs == "queue":
            start_worker(system)
        answers: list[httpx.Response] = []

        def started_now() -> bool:
            answers.append(post(client, "q-status", scenes(2)))
            return answers[-1].status_code == 202

        assert wait_until(started_now, timeout=30, every=0.5), answers[-1].text
        seen = poll_until_done(client, "q-status", timeout=60)
        assert seen[-1]["status"] == "assets_generated", seen[-1]
