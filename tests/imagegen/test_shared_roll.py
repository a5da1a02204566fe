"""The replicas' roll call (services/imagegen/shared_roll.py): the heartbeat script on the real
Redis, and what a replica back from an outage decides from the words it hears."""

from __future__ import annotations

import time

import pytest

from services.imagegen.shared_roll import HEARTBEAT, Roll
from tests.conftest import wait_until
from tests.redis_server import Prefix

LEASE_MS = 60_000


def beat(prefix: Prefix, me: str, outages: int, sharing: bool) -> tuple[int, list[bytes], list[bytes]]:
    """One heartbeat, in a later millisecond of Redis's clock than the one before (words are
    ordered by it)."""
    seconds, micros = prefix.client.time()
    assert wait_until(lambda: prefix.client.time() > (seconds, micros // 1000 * 1000 + 999), timeout=5)
    script = prefix.client.register_script(HEARTBEAT)
    now, alive, words = script(
        keys=[f"{prefix.name}:replicas", f"{prefix.name}:words"], args=[LEASE_MS, me, outages, int(sharing)]
    )
    return int(now), alive, words


def test_a_ping_from_before_an_outage_run_late_does_not_undo_the_word_alone(redis_prefix: Prefix) -> None:
    """b went alone (its second outage); a ping it sent while it still shared, run by a thawed
    Redis only now, renews its lease but leaves its word: b works alone."""
    beat(redis_prefix, "b", 1, False)
    now, alive, words = beat(redis_prefix, "b", 0, True)  # the stale one
    roll = Roll("a", lease=60)
    roll.heard(now, alive, words, up=True)
    assert roll.alone == {"b"} and roll.settling
    now, alive, words = beat(redis_prefix, "b", 1, True)  # b is back and shares
    roll.heard(now, alive, words, up=True)
    assert not roll.settling


def test_a_replica_back_waits_for_every_replica_it_counted_to_share_again(redis_prefix: Prefix) -> None:
    now, alive, words = beat(redis_prefix, "b", 0, True)  # before the outage
    roll = Roll("a", lease=60)
    roll.heard(*beat(redis_prefix, "a", 0, True), up=True)
    assert roll.replicas == ["a", "b"] and not roll.settling
    # The outage: a is back first. b's last word says it shares, but it is from before.
    now, alive, words = beat(redis_prefix, "a", 1, False)
    roll.heard(now, alive, words, up=False)
    roll.came_back(now)
    assert roll.settling and roll.waiting == {"b"}
    roll.heard(*beat(redis_prefix, "a", 1, True), up=True)
    assert roll.settling, "b has not said anything since"
    roll.heard(*beat(redis_prefix, "b", 1, False), up=True)  # b answers, still alone
    assert roll.settling and roll.alone == {"b"}
    beat(redis_prefix, "b", 1, True)  # b registered its slots and shares
    roll.heard(*beat(redis_prefix, "a", 1, True), up=True)
    assert not roll.settling and roll.replicas == ["a", "b"]


def test_the_parts_count_a_replica_unheard_since_the_outage_until_a_lease_has_passed(redis_prefix: Prefix) -> None:
    """After an outage longer than the lease Redis has forgotten b: a still counts it (b may
    be working alone) until b speaks or a lease has passed without a word from it."""
    roll = Roll("a", lease=60, replicas=["a", "b"])
    now, alive, words = beat(redis_prefix, "a", 1, False)
    assert alive == [b"a"]
    roll.heard(now, alive, words, up=False)
    assert roll.replicas == ["a", "b"], "an answer while down does not shrink the parts' count"
    roll.came_back(now)
    roll.heard(*beat(redis_prefix, "a", 1, True), up=True)
    assert roll.settling and roll.replicas == ["a", "b"]
    roll.wait_until = time.monotonic() - 1  # as if a lease had passed
    roll.heard(*beat(redis_prefix, "a", 1, True), up=True)
    assert not roll.settling and roll.replicas == ["a"]


@pytest.mark.parametrize("others", [[], ["b", "c"]])
def test_words_of_replicas_unheard_for_a_lease_are_dropped(redis_prefix: Prefix, others: list[str]) -> None:
    for name in others:
        beat(redis_prefix, name, 0, True)
    redis_prefix.client.hset(f"{redis_prefix.name}:words", "gone", f"0 0 {int(time.time() * 1000) - 2 * LEASE_MS}")
    _now, _alive, words = beat(redis_prefix, "a", 0, True)
    assert sorted(words[::2]) == sorted(name.encode() for name in ["a", *others])
