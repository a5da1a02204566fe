"""imagegen replicas sharing limits, breakers and paid images through a real Redis, each a
real process against one fake provider: what the provider sees is the proof."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.channels import CHANNEL_OPTIONS
from storyshort.imagegen.v1 import imagegen_pb2, imagegen_pb2_grpc
from tests.conftest import OWN_SUBCHANNELS, SYSTEM_KEY, metric, wait_until
from tests.fakes import openai_fake as fo
from tests.fakes.tcp_proxy import FaultyProxy
from tests.redis_server import OwnRedis, Prefix
from tools.processes import SERVICES, System, free_port, wait_for_port

pytestmark = pytest.mark.slow
A, B = "gpt-image-2.5-sunburst", "gpt-image-2"


@dataclass
class Replicas:
    system: System
    ports: list[int] = field(default_factory=list)
    metrics: list[int] = field(default_factory=list)

    def proc(self, i: int) -> subprocess.Popen[bytes]:
        return self.system.procs[f"imagegen-{i}"]

    def shared_state(self, i: int, name: str) -> float:
        """Replica ``i``'s ``storyshort_imagegen_shared_state_<name>``."""
        return metric(f"http://127.0.0.1:{self.metrics[i]}/metrics", f"storyshort_imagegen_shared_state_{name}")

    def up(self, i: int) -> float:
        return self.shared_state(i, "up")

    def settling(self, i: int) -> float:
        return self.shared_state(i, "settling")

    def replicas_seen(self, i: int) -> float:
        return self.shared_state(i, "replicas")

    def know_each_other(self) -> bool:
        """Every replica has seen all of them alive in Redis (their parts of a limit add up)."""
        return all(self.up(i) == 1 and self.replicas_seen(i) == len(self.ports) for i in range(len(self.ports)))


@pytest.fixture
def replicas(tmp_path: Path, fake_openai: fo.FakeOpenAI) -> Iterator[Callable[..., Replicas]]:
    started: list[System] = []

    def start(count: int, shared: str | list[str], prefix: str, **env: str) -> Replicas:
        """``shared``: the Redis URL, or one per replica (each through a proxy of its own)."""
        urls = shared if isinstance(shared, list) else [shared] * count
        settings = {
            "DATA_DIR": str(tmp_path / "data"),
            "OPENAI_API_KEY": SYSTEM_KEY,
            "OPENAI_BASE_URL": fake_openai.base_url,
            "IMAGEGEN_CHAIN": A,
            "IMAGEGEN_SHARED_PREFIX": prefix,
            "IMAGE_GEN_TIMEOUT": "30",
            "LOG_LEVEL": "INFO",
            **env,
        }
        system = System.configure(settings, {name: free_port() for name in SERVICES}, log_dir=tmp_path / "logs")
        started.append(system)
        group = Replicas(system)
        for i in range(count):
            port, metrics_port = free_port(), free_port()
            group.ports.append(port)
            group.metrics.append(metrics_port)
            env_i = {
                **system.env,
                "IMAGEGEN_PORT": str(port),
                "IMAGEGEN_METRICS_PORT": str(metrics_port),
                "IMAGEGEN_SHARED_STATE": urls[i],
            }
            system.start(f"imagegen-{i}", module="services.imagegen", env=env_i, port=port, wait=False)
        for i, port in enumerate(group.ports):
            wait_for_port(port, 30, group.proc(i))
        return group

    yield start
    for system in started:
        system.stop_all(grace=5)


async def generate(
    port: int, prompt: str, timeout: float = 40, video_id: str = "", scene: int = 0, parallelism: int = 0
) -> imagegen_pb2.GenerateResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[*CHANNEL_OPTIONS, *OWN_SUBCHANNELS]) as ch:
        request = imagegen_pb2.GenerateRequest(
            prompt=prompt, size="256x256", video_id=video_id, scene=scene, video_parallelism=parallelism
        )
        answer: imagegen_pb2.GenerateResponse = await imagegen_pb2_grpc.ImageGenServiceStub(ch).Generate(
            request, timeout=timeout
        )
        return answer


async def spread(group: Replicas, calls: int, prefix: str = "p") -> list[imagegen_pb2.GenerateResponse]:
    """``calls`` Generate calls at once, spread evenly over the replicas."""
    return list(
        await asyncio.gather(*(generate(group.ports[i % len(group.ports)], f"{prefix} {i}") for i in range(calls)))
    )


def test_three_replicas_hold_one_provider_limit(
    replicas: Callable[..., Replicas], redis_prefix: Prefix, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script(A, fo.Ok(latency=0.3))
    group = replicas(3, redis_prefix.url, redis_prefix.name, IMAGEGEN_CONCURRENCY="4")
    answers = asyncio.run(spread(group, 60))
    assert [a.provider for a in answers] == [A] * 60
    assert fake_openai.count(A) == 60
    # Per-process limits would let 12 through at once; the shared one lets 4.
    assert 2 <= fake_openai.max_in_flight[A] <= 4, fake_openai.max_in_flight


def test_slots_of_a_killed_replica_come_back_within_the_lease(
    replicas: Callable[..., Replicas], redis_prefix: Prefix, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script(A, fo.Hang(), fo.Hang(), fo.Ok())
    group = replicas(2, redis_prefix.url, redis_prefix.name, IMAGEGEN_CONCURRENCY="2", IMAGEGEN_SHARED_LEASE="2s")
    slots = f"{redis_prefix.name}:slots:{A}"

    async def hold_then_ask() -> tuple[float, imagegen_pb2.GenerateResponse]:
        holding = [asyncio.ensure_future(generate(group.ports[0], f"held {i}", timeout=60)) for i in range(2)]
        assert await asyncio.to_thread(wait_until, lambda: redis_prefix.client.zcard(slots) == 2, 15)
        assert await asyncio.to_thread(fake_openai.wait_for_requests, 2)
        group.proc(0).send_signal(signal.SIGKILL)  # dies holding both slots
        started = time.monotonic()
        answer = await generate(group.ports[1], "after the kill")
        for call in holding:
            call.cancel()
        await asyncio.gather(*holding, return_exceptions=True)
        return time.monotonic() - started, answer

    waited, answer = asyncio.run(hold_then_ask())
    assert answer.provider == A and not answer.placeholder
    assert fake_openai.count(A) == 3
    assert waited < 2 + 6, waited  # the lease (2 s), with slack for a busy machine


def test_a_billing_stop_seen_by_one_replica_skips_the_model_on_the_others(
    replicas: Callable[..., Replicas], redis_prefix: Prefix, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script(A, fo.BILLING)
    group = replicas(3, redis_prefix.url, redis_prefix.name, IMAGEGEN_CHAIN=f"{A},{B}")
    first = asyncio.run(generate(group.ports[0], "finds the billing stop"))
    assert first.provider == B and fake_openai.count(A) == 1
    for port in group.ports[1:]:
        answer = asyncio.run(generate(port, "next call"))
        assert answer.provider == B
        assert answer.attempts[0].outcome == imagegen_pb2.ATTEMPT_OUTCOME_SKIPPED
        assert "breaker open" in answer.attempts[0].reason
    assert fake_openai.count(A) == 1  # discovered once, on one replica


def test_a_hanging_model_gets_one_probe_across_the_cluster(
    replicas: Callable[..., Replicas], redis_prefix: Prefix, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script(A, fo.Hang())
    group = replicas(
        3,
        redis_prefix.url,
        redis_prefix.name,
        IMAGEGEN_CHAIN=f"{A},{B}",
        IMAGEGEN_PROVIDER_LIMITS=json.dumps({A: {"timeout": 0.5}}),
        IMAGEGEN_BREAKER_TRANSIENT_COOLDOWN="1s",
        IMAGEGEN_SAME_PROVIDER_RETRIES="0",
    )
    for i in range(3):  # one timeout on each replica: K = 3 in a row, counted together
        answer = asyncio.run(generate(group.ports[i], f"times out {i}"))
        assert answer.provider == B and answer.attempts[0].outcome == imagegen_pb2.ATTEMPT_OUTCOME_TIMEOUT
    assert fake_openai.count(A) == 3
    breaker = f"{redis_prefix.name}:breaker:{A}"
    assert redis_prefix.client.hget(breaker, "state") == b"open"

    def cooled_down() -> bool:
        seconds, micros = redis_prefix.client.time()
        return seconds * 1000 + micros // 1000 >= int(redis_prefix.client.hget(breaker, "until") or 0)

    assert wait_until(cooled_down, timeout=10)
    # Nine calls at once, three per replica. A probe that finds no place at the model in its
    # time (a late Redis answer on a busy machine) hands its turn to the next call, so the
    # calls come again until the model was probed (at most three rounds).
    for attempt in range(3):
        answers = asyncio.run(spread(group, 9, f"after the cooldown {attempt}"))
        assert all(a.provider == B for a in answers)
        if fake_openai.count(A) > 3:
            break
    assert fake_openai.count(A) == 4  # exactly one probe, from one replica of three


def test_an_image_paid_on_a_replica_that_died_is_not_paid_again_on_another(
    replicas: Callable[..., Replicas], redis_prefix: Prefix, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script(A, fo.Ok(latency=1.0))
    group = replicas(2, redis_prefix.url, redis_prefix.name)

    async def caller_gives_up() -> None:
        """The caller goes away once the request is at the provider, as a gateway killed
        mid-run does: replica 0 goes on, pays for the image and keeps it."""
        call = asyncio.ensure_future(generate(group.ports[0], "a paid scene", video_id="v1", scene=3))
        assert await asyncio.to_thread(fake_openai.wait_for_requests, 1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(caller_gives_up())
    assert wait_until(lambda: len(redis_prefix.matching("paid:*")) == 1, timeout=15)
    group.proc(0).send_signal(signal.SIGKILL)
    answer = asyncio.run(generate(group.ports[1], "a paid scene", video_id="v1", scene=3))
    assert answer.provider == A and not answer.placeholder
    assert "replayed" in answer.attempts[0].reason
    assert fake_openai.count(A) == 1


def test_a_retry_on_another_replica_waits_for_the_image_being_paid_for(
    replicas: Callable[..., Replicas], redis_prefix: Prefix, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script(A, fo.Ok(latency=1.5))
    group = replicas(2, redis_prefix.url, redis_prefix.name)

    async def both() -> tuple[imagegen_pb2.GenerateResponse, imagegen_pb2.GenerateResponse]:
        first = asyncio.ensure_future(generate(group.ports[0], "one scene", video_id="v2", scene=1))
        assert await asyncio.to_thread(fake_openai.wait_for_requests, 1)
        second = await generate(group.ports[1], "one scene", video_id="v2", scene=1)
        return await first, second

    first, second = asyncio.run(both())
    assert first.provider == second.provider == A and second.image == first.image
    assert fake_openai.count(A) == 1


def test_redis_stopping_mid_run_fails_no_call_and_sharing_resumes_when_it_is_back(
    replicas: Callable[..., Replicas], own_redis: OwnRedis, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script(A, fo.Ok(latency=0.2))
    group = replicas(
        2,
        own_redis.url,
        "outage",
        IMAGEGEN_CONCURRENCY="4",
        IMAGEGEN_SHARED_LOCAL_SHARE="0.5",
        IMAGEGEN_SHARED_TIMEOUT="200ms",
    )
    assert wait_until(group.know_each_other, timeout=10)

    async def through_an_outage() -> list[imagegen_pb2.GenerateResponse]:
        calls = [asyncio.ensure_future(generate(group.ports[i % 2], f"outage {i}")) for i in range(40)]
        assert await asyncio.to_thread(fake_openai.wait_for_requests, 8)
        own_redis.kill()
        # The requests out at the kill keep the slots they hold; once they are answered,
        # the local limits alone decide.
        out = {r.body["prompt"] for r in fake_openai.generation_requests()}
        assert await asyncio.to_thread(wait_until, lambda: out <= set(fake_openai.paid), 15)
        with fake_openai.lock:
            fake_openai.max_in_flight.clear()
        return list(await asyncio.gather(*calls))

    answers = asyncio.run(through_an_outage())
    assert [a.provider for a in answers] == [A] * 40  # not one placeholder, not one error
    assert group.up(0) == 0 and group.up(1) == 0
    # Each replica's part: the limit of 4 split between the two alive, so 4 at the provider at most.
    assert fake_openai.max_in_flight[A] <= 4
    for port in group.ports:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            shared = health.Check(health_pb2.HealthCheckRequest(service="storyshort.imagegen.v1.SharedState"))
            whole = health.Check(health_pb2.HealthCheckRequest(service="storyshort.imagegen.v1.ImageGenService"))
        assert shared.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert whole.status == health_pb2.HealthCheckResponse.SERVING
    own_redis.start()  # the same port again
    assert wait_until(lambda: group.up(0) == 1 and group.up(1) == 1, timeout=15)
    import redis

    client = redis.Redis(port=own_redis.port)
    fake_openai.script(A, fo.Ok(latency=0.5))

    async def shared_again() -> list[imagegen_pb2.GenerateResponse]:
        calls = asyncio.ensure_future(spread(group, 8, "after the outage"))
        # The slots are leases in Redis again: all four of the shared limit, across both.
        full = await asyncio.to_thread(wait_until, lambda: client.zcard(f"outage:slots:{A}") == 4, 15)
        answers = await calls
        assert full
        return answers

    after = asyncio.run(shared_again())
    assert [a.provider for a in after] == [A] * 8


def test_replicas_started_before_redis_work_alone_and_share_once_it_answers(
    replicas: Callable[..., Replicas], fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script(A, fo.Ok(latency=0.2))
    later = OwnRedis()  # nothing listens on its port yet
    group = replicas(2, later.url, "late", IMAGEGEN_CONCURRENCY="4", IMAGEGEN_SHARED_TIMEOUT="200ms")
    try:
        answers = asyncio.run(spread(group, 8, "before redis"))
        assert [a.provider for a in answers] == [A] * 8  # served with local limits
        assert group.up(0) == 0 and group.up(1) == 0
        later.start()
        assert wait_until(lambda: group.up(0) == 1 and group.up(1) == 1, timeout=15)
    finally:
        later.kill()


def test_a_slow_redis_is_not_taken_for_a_dead_one(
    replicas: Callable[..., Replicas], own_redis: OwnRedis, fake_openai: fo.FakeOpenAI
) -> None:
    """Redis answers later than IMAGEGEN_SHARED_TIMEOUT (frozen for less than the ping
    needs to decide) while 60 calls wait on three replicas: the late answers are felt, the
    shared state stays up and the shared limit of 6 holds. A replica that took one late
    answer for a dead Redis would use its own part meanwhile."""
    fake_openai.script(A, fo.Ok(latency=0.3))
    group = replicas(
        3,
        own_redis.url,
        "slow",
        IMAGEGEN_CONCURRENCY="6",
        IMAGEGEN_SHARED_TIMEOUT="100ms",
        IMAGEGEN_SHARED_PING_TIMEOUT="4s",  # two missed pings: 8 s frozen before "down"
        IMAGEGEN_SHARED_LOCAL_SHARE="0.5",
    )
    assert wait_until(group.know_each_other, timeout=10)

    def late(i: int) -> float:
        return group.shared_state(i, "late_total")

    async def through_a_slow_spell() -> list[imagegen_pb2.GenerateResponse]:
        calls = asyncio.ensure_future(spread(group, 60, "slow"))
        assert await asyncio.to_thread(fake_openai.wait_for_requests, 6)
        own_redis.freeze()
        try:
            felt = await asyncio.to_thread(wait_until, lambda: all(late(i) >= 1 for i in range(3)), 6)
        finally:
            own_redis.thaw()
        assert felt, "every replica had an answer come late"
        return await calls

    answers = asyncio.run(through_a_slow_spell())
    assert [a.provider for a in answers] == [A] * 60
    assert all(group.up(i) == 1 for i in range(3))
    logs = "".join((group.system.log_dir / f"imagegen-{i}.log").read_text() for i in range(3))  # type: ignore[operator]
    assert "shared state unavailable" not in logs
    assert fake_openai.max_in_flight[A] <= 6, fake_openai.max_in_flight


def test_a_frozen_redis_is_found_dead_and_the_parts_add_up_to_the_limit(
    replicas: Callable[..., Replicas], own_redis: OwnRedis, fake_openai: fo.FakeOpenAI
) -> None:
    """Redis stops answering (SIGSTOP) mid-run: the ping finds it dead, each of the three
    replicas takes its part of the limit of 6 (2 each, not a share of 6 each), every call is
    served; once it answers again, the slots taken alone are registered before sharing."""
    fake_openai.script(A, fo.Ok(latency=0.3))
    group = replicas(
        3,
        own_redis.url,
        "frozen",
        IMAGEGEN_CONCURRENCY="6",
        IMAGEGEN_SHARED_TIMEOUT="100ms",
        IMAGEGEN_SHARED_PING_TIMEOUT="300ms",
        IMAGEGEN_SHARED_LOCAL_SHARE="0.5",  # what a replica would take without knowing the others
    )
    assert wait_until(group.know_each_other, timeout=10)

    async def through_a_freeze() -> list[imagegen_pb2.GenerateResponse]:
        calls = asyncio.ensure_future(spread(group, 60, "frozen"))
        assert await asyncio.to_thread(fake_openai.wait_for_requests, 6)
        own_redis.freeze()
        try:
            down = await asyncio.to_thread(wait_until, lambda: all(group.up(i) == 0 for i in range(3)), 15)
            assert down, "the ping found the frozen Redis dead on every replica"
            answers = await calls
        finally:
            own_redis.thaw()
        return answers

    answers = asyncio.run(through_a_freeze())
    assert [a.provider for a in answers] == [A] * 60
    assert fake_openai.max_in_flight[A] <= 6, fake_openai.max_in_flight
    assert wait_until(group.know_each_other, timeout=15)


def test_a_replica_back_first_keeps_to_its_part_until_the_others_have_registered_theirs(
    replicas: Callable[..., Replicas], own_redis: OwnRedis, fake_openai: fo.FakeOpenAI
) -> None:
    """Redis comes back for one replica while another still works alone (its ping has not
    answered yet), so the slot that one took alone is not in Redis. Limit 2, each replica
    reaching Redis through a proxy of its own: both frozen until both work alone, replica 1
    sends a long request on its part, then only replica 0's proxy thaws. Replica 0 must not
    take both places from Redis (3 at the provider): its three calls go one at a time, on its
    part, until replica 1 is back and has registered its slot; then the limit is shared
    again and replica 0's calls hold both places at once."""
    fake_openai.script(A, fo.Ok(latency=12), fo.Ok(latency=1))  # the first: replica 1's, alone
    upstream = ("127.0.0.1", own_redis.port)
    with FaultyProxy(upstream) as first, FaultyProxy(upstream) as second:
        group = replicas(
            2,
            [first.dsn(own_redis.url), second.dsn(own_redis.url)],
            "first-back",
            IMAGEGEN_CONCURRENCY="2",
            IMAGEGEN_SHARED_TIMEOUT="100ms",
            IMAGEGEN_SHARED_PING_TIMEOUT="300ms",
            IMAGEGEN_SHARED_LEASE="60",  # replica 1 stays counted alive through the test
        )
        assert wait_until(group.know_each_other, timeout=10)
        first.freeze()
        second.freeze()
        assert wait_until(lambda: group.up(0) == 0 and group.up(1) == 0, timeout=15)

        async def one_back_first() -> list[imagegen_pb2.GenerateResponse]:
            alone = asyncio.ensure_future(generate(group.ports[1], "alone on replica 1"))
            assert await asyncio.to_thread(fake_openai.wait_for_requests, 1)
            first.thaw()
            assert await asyncio.to_thread(wait_until, lambda: group.up(0) == 1, 15)
            back = await asyncio.gather(*(generate(group.ports[0], f"back {i}") for i in range(3)))
            second.thaw()
            return [await alone, *back]

        answers = asyncio.run(one_back_first())
        assert [a.provider for a in answers] == [A] * 4
        alone, *back = fake_openai.generation_requests()
        assert all(alone.at < r.at < alone.answered for r in back), "replica 0 sent while replica 1's call was out"
        assert fake_openai.max_in_flight[A] <= 2, fake_openai.max_in_flight
        assert all(b.at >= a.answered for a, b in itertools.pairwise(back))  # one at a time: its part
        assert wait_until(lambda: group.up(1) == 1 and group.settling(0) == 0, timeout=15)
        fake_openai.script(A, fo.Ok(latency=3))  # slack for a slow acquire on a busy machine
        asyncio.run(spread(Replicas(group.system, group.ports[:1], group.metrics[:1]), 2, "shared again"))
        together = fake_openai.generation_requests()[4:]
        assert max(r.at for r in together) < min(r.answered for r in together)  # both places, at once


def test_a_limit_smaller_than_the_replicas_gives_some_replicas_no_part(
    replicas: Callable[..., Replicas], own_redis: OwnRedis, fake_openai: fo.FakeOpenAI
) -> None:
    """Limit 2, three replicas, Redis gone: two replicas may send one request each, the
    third none; its calls go to the next model at once instead of past the limit."""
    fake_openai.script(A, fo.Ok(latency=0.2))
    fake_openai.script(B, fo.Ok())
    group = replicas(
        3,
        own_redis.url,
        "small",
        IMAGEGEN_CHAIN=f"{A},{B}",
        IMAGEGEN_PROVIDER_LIMITS=json.dumps({A: {"concurrency": 2}}),
        IMAGEGEN_SHARED_TIMEOUT="100ms",
    )
    assert wait_until(group.know_each_other, timeout=10)
    own_redis.kill()
    assert wait_until(lambda: all(group.up(i) == 0 for i in range(3)), timeout=15)
    answers = asyncio.run(spread(group, 30, "small"))
    assert not any(a.placeholder for a in answers)
    assert fake_openai.max_in_flight[A] <= 2, fake_openai.max_in_flight
    by_replica = [answers[i::3] for i in range(3)]  # spread() sends call i to replica i % 3
    served_by_a = sorted(sum(a.provider == A for a in mine) for mine in by_replica)
    assert served_by_a[0] == 0 and served_by_a[1] > 0, served_by_a
    without = next(mine for mine in by_replica if all(a.provider == B for a in mine))
    assert all("no part of the provider's limit" in a.attempts[0].reason for a in without)


def test_a_request_built_while_waiting_and_refused_by_the_shared_limit_sends_and_gives_back_nothing(
    replicas: Callable[..., Replicas], redis_prefix: Prefix, fake_openai: fo.FakeOpenAI
) -> None:
    """The send gate crossed with the shared limit. A limit of 2 over two replicas, both
    places held by requests left to finish late (one from each replica). On replica 0 a
    video's second scene waits for its lane, its request built and held at its gate; when
    its turn comes the shared limit has no place for it within its share, so it is refused
    unsent. It never held a place, so it gives none back: replica 0's own place stays
    held, and a call on replica 1 meanwhile still finds no room. A place given back for
    the refused request would hand Redis replica 0's lease and let a third request in."""
    fake_openai.script(A, fo.Ok(latency=8.0), fo.Ok(latency=8.0), fo.Ok(latency=0.2))
    group = replicas(
        2,
        redis_prefix.url,
        redis_prefix.name,
        IMAGE_GEN_TIMEOUT="1.5",
        IMAGEGEN_PROVIDER_LIMITS=json.dumps({A: {"concurrency": 2}}),
    )

    async def crossing() -> list[imagegen_pb2.GenerateResponse]:
        holders = asyncio.gather(generate(group.ports[0], "holder 0"), generate(group.ports[1], "holder 1"))
        assert await asyncio.to_thread(fake_openai.wait_for_requests, 2)
        scenes = await asyncio.gather(
            *(generate(group.ports[0], f"v scene {n}", video_id="v", scene=n, parallelism=1) for n in (1, 2))
        )
        after = await generate(group.ports[1], "after the refusal")
        await holders  # placeholders at their time; their requests go on, holding the places
        return [*scenes, after]

    first, second, after = asyncio.run(crossing())
    assert first.placeholder and second.placeholder
    assert [a.outcome for a in second.attempts][:1] == [imagegen_pb2.ATTEMPT_OUTCOME_SKIPPED], second.attempts
    sent = [r.body["prompt"] for r in fake_openai.generation_requests()]
    assert not {"v scene 1", "v scene 2"} & set(sent), sent
    # Both holders still at the provider when `after` asked: a third place was never given.
    assert fake_openai.max_in_flight[A] == 2, (fake_openai.max_in_flight, sent, after.attempts)
