"""Mutants: a line of the code made wrong on purpose, and the test that must then fail.

Each mutant here is a bug one of the suite's tests was written or strengthened to catch
(issue #34: a test is as strong as the mutation it fails on). For each, this applies the
change in a scratch git worktree of HEAD, runs the named tests there, and counts the mutant
killed when they fail; the worktree is removed afterwards, so the working tree is never
touched. Exit status 1 when a mutant survives.

    .venv/bin/python -m tools.mutants              # all
    .venv/bin/python -m tools.mutants fail-closed  # by name
    .venv/bin/python -m tools.mutants --list
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tools.processes import ROOT
from tools.worktree import scratch_worktree

# "No reading from today" of the spend readings (the daily cap's and each user's share's).
NO_READING = "                    )\n                    return math.inf\n"
# The window of the end of a run's flush of unrecorded reports.
FLUSH = "            return\n        try:\n            async for attempt in retrying_within(self.flush_within, is_down)"


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    edits: tuple[tuple[str, str], ...]  # (exactly once in the file, what it becomes)
    tests: tuple[str, ...]
    says: str  # the bug, in words


MUTANTS = (
    Mutant(
        "fail-closed",
        "gateway/budget.py",
        ((NO_READING, NO_READING.replace("math.inf", "0.0")),),
        ("tests/e2e/test_budget.py::test_the_daily_cap_fails_closed_when_todays_spend_cannot_be_read",),
        "no reading of today's spend counts as nothing spent (the daily cap fails open)",
    ),
    Mutant(
        "owner-cap-not-held",
        "gateway/budget.py",
        (("                caps.owner_usd = self.owner_cap\n", "                pass\n"),),
        (
            "tests/e2e/test_budget.py::"
            "test_each_user_has_a_share_of_the_daily_cap_and_a_spent_share_refuses_their_starts_only",
        ),
        "a hold is asked for without the user's share (BUDGET_USER_SHARE not enforced in the store)",
    ),
    Mutant(
        "midnight-by-wall-clock",
        "gateway/budget.py",
        (("        return day_start_ms(self.clock())\n", "        return day_start_ms(time.time())\n"),),
        (
            "tests/gateway/test_budget.py::test_the_daily_cap_turns_over_at_utc_midnight",
            "tests/gateway/test_budget.py::"
            "test_across_midnight_a_reading_from_yesterday_does_not_count_and_the_cap_fails_closed",
        ),
        "the guard's day ignores its clock (the daily cap never turns over in a test of midnight)",
    ),
    Mutant(
        "followers-unbounded",
        "gateway/routes/videos.py",
        (("    if events.full:\n", "    if False:\n"),),
        ("tests/e2e/test_events.py::test_a_gateway_at_its_most_streams_answers_503_and_takes_one_again_when_one_ends",),
        "EVENTS_MAX_FOLLOWERS is not enforced",
    ),
    Mutant(
        "retry-after-ignored",
        "services/imagegen/providers/openai_images.py",
        (("retry_after=_retry_after(exc.response.headers)", "retry_after=None"),),
        ("tests/e2e/test_fault_matrix.py::test_provider_fault[429-retry-after]",),
        "a 429's Retry-After is not read: the throttled scene is asked again before it said",
    ),
    Mutant(
        "two-upload-attempts",
        "services/storage/uploader.py",
        (("RetryPolicy(attempts=3,", "RetryPolicy(attempts=2,"),),
        ("tests/e2e/test_fault_matrix.py::test_storage_fault[5xx-then-success-first0-assets_generated-1]",),
        "an upload is tried twice, not three times",
    ),
    Mutant(
        "hop-breakers-status-only",
        "gateway/breakers.py",
        (
            (
                "if self.opened_at is None and self.failures >= self.threshold:",
                'if self.opened_at is None and self.service == "status" and self.failures >= self.threshold:',
            ),
        ),
        (
            "tests/e2e/test_fault_matrix.py::test_each_hop_gives_up_at_its_deadline[imagegen]",
            "tests/e2e/test_fault_matrix.py::test_each_hop_gives_up_at_its_deadline[storage]",
        ),
        "the gateway's breakers to imagegen and storage never open",
    ),
    Mutant(
        "healing-never-gives-up",
        "gateway/healing.py",
        (("        if tries >= self.max_tries:\n", "        if False:\n"),),
        ("tests/gateway/test_healing.py::test_it_gives_up_after_the_last_try_and_says_so",),
        "healing resumes a video past HEAL_MAX_TRIES",
    ),
    Mutant(
        "grace-cut-short",
        "services/common/server.py",
        (("        await self.server.stop(grace)\n", "        await self.server.stop(0)\n"),),
        (
            "tests/e2e/test_grace.py::test_imagegen_refuses_new_calls_and_finishes_the_generation_in_flight",
            "tests/e2e/test_grace.py::test_status_refuses_new_calls_and_records_the_write_in_flight",
        ),
        "SIGTERM cancels the calls in flight instead of letting them finish",
    ),
    Mutant(
        "gateway-takes-posts-while-draining",
        "gateway/draining.py",
        (
            (
                '        if self.drain.draining and scope["type"] == "http"',
                '        if False and scope["type"] == "http"',
            ),
        ),
        ("tests/e2e/test_grace.py::test_the_gateway_drains_then_finishes_what_is_in_flight",),
        "a draining gateway still takes new starts",
    ),
    Mutant(
        "cors-inside-the-body-limit",
        "gateway/app.py",
        (
            (
                "    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)\n",
                "",
            ),
            (
                "    handlers.install(app)\n",
                "    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)\n    handlers.install(app)\n",
            ),
        ),
        ("tests/e2e/test_access.py::test_oversized_bodies_are_refused_with_413_declared_or_chunked",),
        "the body limit answers 413 outside CORS: the page cannot read it",
    ),
    Mutant(
        "end-of-run-window-fixed",
        "gateway/reporting.py",
        ((FLUSH, FLUSH.replace("self.flush_within", "END_OF_RUN_WRITES")),),
        (
            "tests/gateway/test_pipeline.py::test_reports_still_missed_after_the_flush_window_are_journaled_for_a_resume",
        ),
        "the end of a run ignores its configured flush window",
    ),
    Mutant(
        "regenerate-replays-the-old-image",
        "gateway/generating.py",
        (('variant=run.variant if scene.number in run.regenerate else "",', 'variant="",'),),
        ("tests/e2e/test_edits.py::test_regenerate_makes_one_scene_again_with_a_new_url_version",),
        "a regenerated scene is answered from the replay of its paid image (the same bytes)",
    ),
    Mutant(
        "fake-ignores-lte",
        "tests/fakes/supabase_fake.py",
        (('            if op == "lte" and not (value is not None and value <= other):\n', "            if False:\n"),),
        ("tests/storage/test_supabase_fake_is_strict.py::test_filters_select_the_rows_postgrest_would",),
        "the Supabase fake takes an lte filter and ignores it",
    ),
    Mutant(
        "a-store-drops-a-video-field",
        "services/status/stores/rows.py",
        (
            (
                "run_to_row(change.run)",
                'run_to_row({k: v for k, v in change.run.items() if k != "error"})',
            ),
        ),
        ("tests/status/test_behaviour.py::test_every_field_updatevideo_may_set_is_kept_and_read_back",),
        "the stores stop writing one of the video's fields",
    ),
    Mutant(
        "lost-connection-taken-for-a-timeout",
        "services/imagegen/providers/openai_images.py",
        (("openai.APITimeoutError) and not _dropped(exc):", "openai.APITimeoutError):"),),
        (
            "tests/imagegen/test_chain.py::test_a_connection_hung_up_on_is_lost_not_timed_out_and_the_model_is_asked_again",
            "tests/imagegen/test_chain.py::test_a_refused_connection_is_lost_not_timed_out",
            "tests/imagegen/test_streaming.py::test_a_streamed_request_hung_up_on_is_asked_again_not_taken_for_a_timeout",
        ),
        "a connection refused or hung up on (the aiohttp transport's ConnectTimeout) read as a hang: never asked again",
    ),
    Mutant(
        "sent-before-its-turn",
        "services/imagegen/providers/base.py",
        (("        await gate.passed()\n", "        pass\n"),),
        (
            "tests/imagegen/test_admission.py::test_a_video_has_at_most_its_parallelism_at_the_provider",
            "tests/imagegen/test_admission.py::test_a_call_cancelled_before_its_turn_is_never_sent",
        ),
        "a request built while its call waits for its lane goes out at once (the lane not held)",
    ),
    Mutant(
        "place-given-back-unheld",
        "services/imagegen/chain.py",
        (("            if gate is None or gate.opened:\n", "            if True:\n"),),
        (
            "tests/imagegen/test_admission.py::test_a_call_that_leaves_before_its_turn_gives_back_no_place_it_never_held",
        ),
        "a request built while waiting and never sent gives back a provider place it never held",
    ),
    Mutant(
        "refused-end-loses-its-scene",
        "services/status/stores/sqlite.py",
        (
            (
                "                except FailedPrecondition as refused:  # the scene is kept all the same\n",
                "                except FailedPrecondition:  # the scene is kept all the same\n"
                "                    raise\n"
                "                except ZeroDivisionError as refused:\n",
            ),
        ),
        ("tests/status/test_behaviour.py::test_a_run_end_the_status_refuses_keeps_the_scene_it_came_with[sqlite]",),
        "the run's end refused by the video's status rolls back the last scene reported with it",
    ),
    Mutant(
        "end-written-apart",
        "services/status/book.py",
        (
            (
                "lambda: self.store.report_scene(video_id, scene, settles, then)\n        )\n",
                "lambda: self.store.report_scene(video_id, scene, settles)\n"
                "        ) if then is None else (\n"
                "            await self.store.report_scene(video_id, scene, settles)\n"
                "            and await self.update(video_id, then, deadline)\n"
                "        )\n",
            ),
        ),
        ("tests/status/test_behaviour.py::test_no_write_leaves_a_run_with_every_scene_in_still_generating[sqlite]",),
        "the run's end written apart, after the last scene: between them the video reads all in, still generating",
    ),
    Mutant(
        "shared-place-given-back-unheld",
        "services/imagegen/chain.py",
        (("            if gate is None or gate.opened:\n", "            if True:\n"),),
        (
            "tests/imagegen/test_shared_state.py::"
            "test_a_request_built_while_waiting_and_refused_by_the_shared_limit_sends_and_gives_back_nothing",
        ),
        "the same, across replicas: the refused request hands Redis another request's lease",
    ),
    Mutant(
        "replica-back-shares-at-once",
        "services/imagegen/shared_limit.py",
        (
            (
                "            if self.shared.settling and self._taken >= self.local_size:\n",
                "            if False:\n",
            ),
        ),
        (
            "tests/imagegen/test_shared_state.py::"
            "test_a_replica_back_first_keeps_to_its_part_until_the_others_have_registered_theirs",
        ),
        "a replica back from an outage first takes the whole limit from Redis, without the others' alone slots",
    ),
    Mutant(
        "asks-not-counted-while-keeping-to-the-part",
        "services/imagegen/shared_limit.py",
        (("                self._asking += 1\n", "                self._asking += 0\n"),),
        (
            "tests/imagegen/test_shared_state.py::"
            "test_a_replica_back_first_keeps_to_its_part_until_the_others_have_registered_theirs",
        ),
        "calls arriving together on a replica keeping to its part each see room and all ask Redis, which has some",
    ),
    Mutant(
        "redis-client-failure-fails-the-request",
        "services/imagegen/shared.py",
        (
            (
                "        except Exception as exc:  # the client failing its own way is Redis trouble too\n",
                "        except ZeroDivisionError as exc:\n",
            ),
        ),
        ("tests/imagegen/test_shared_calls.py::test_the_redis_client_failing_its_own_way_fails_no_request",),
        "an error of the Redis client's own (an AttributeError) fails the request that asked Redis (INTERNAL)",
    ),
    Mutant(
        "late-ping-undoes-alone",
        "services/imagegen/shared_roll.py",
        (("if not kept or tonumber(string.match(kept, '^(%d+)')) <= tonumber(ARGV[3]) then", "if true then"),),
        (
            "tests/imagegen/test_shared_roll.py::test_a_ping_from_before_an_outage_run_late_does_not_undo_the_word_alone",
        ),
        "a ping from before an outage, run late by a thawed Redis, says a replica shares that now works alone",
    ),
    Mutant(
        "unheard-replica-forgotten-at-once",
        "services/imagegen/shared_roll.py",
        (("            if time.monotonic() >= self.wait_until:\n", "            if True:\n"),),
        (
            "tests/imagegen/test_shared_roll.py::"
            "test_the_parts_count_a_replica_unheard_since_the_outage_until_a_lease_has_passed",
        ),
        "after an outage longer than the lease, a replica Redis forgot is not waited for (it may still work alone)",
    ),
    Mutant(
        "deadline-from-the-build",
        "services/imagegen/providers/base.py",
        (("    return gate.deadline if gate is not None and gate.opened else deadline\n", "    return deadline\n"),),
        (
            "tests/imagegen/test_admission.py::"
            "test_a_url_answer_after_a_long_wait_for_the_lane_has_the_whole_attempt_to_download",
        ),
        "a request built while waiting counts its deadline from the build, not from when it is sent",
    ),
    Mutant(
        "cut-work-waited-for",
        "services/common/deadlines.py",
        (
            (
                "            _leave(task)\n            raise TimeoutError",
                "            task.cancel()\n            await asyncio.wait({task})\n            raise TimeoutError",
            ),
        ),
        (
            "tests/status/test_faults.py::test_a_postgres_that_stops_answering_mid_life_holds_no_call_past_its_budget",
            "tests/gateway/test_queue_start.py::test_a_queue_database_that_hangs_or_is_down_answers_503_within_the_timeout",
        ),
        "a call cut at its time limit waits for its work to end (asyncio.timeout's way): a hung database holds it",
    ),
    Mutant(
        "video-lock-of-the-session",
        "gateway/queue.py",
        (("pg_advisory_xact_lock(hashtext(%s))", "pg_advisory_lock(hashtext(%s))"),),
        ("tests/gateway/test_queue_start.py::test_a_start_cut_while_its_lock_was_on_the_way_leaves_no_lock_behind",),
        "the video's queue lock is the session's, never released by a start cut mid-way",
    ),
    Mutant(
        "heal-dropped-on-an-outage",
        "gateway/healing.py",
        (("            elif exc.status >= 500:", "            elif False:"),),
        (
            "tests/gateway/test_healing.py::"
            "test_a_queue_that_cannot_take_the_heal_is_asked_again_and_other_refusals_drop_it",
        ),
        "a heal the queue could not take (503) is dropped instead of asked again later",
    ),
    Mutant(
        "readiness-query-per-poll",
        "gateway/queue.py",
        (("        if self._probe is None or self._probe.done():", "        if True:"),),
        ("tests/gateway/test_queue_start.py::test_readiness_asks_the_queue_database_one_query_at_a_time",),
        "/readyz sends a query to a hung queue database at every poll, filling the starts' pool",
    ),
    Mutant(
        "status-time-counted-as-the-queues",
        "gateway/queue.py",
        (("        with limit.paused():  # status answers", "        if True:  # status answers"),),
        ("tests/gateway/test_queue_start.py::test_the_status_services_time_in_a_start_is_not_the_queues",),
        "a slow status service at a queue start is cut as the queue's database not answering",
    ),
    Mutant(
        "start-waits-out-a-silent-status",
        "gateway/routes/videos.py",
        (('    clients.breakers["status"].check_answering()', "    pass"),),
        ("tests/e2e/test_queue.py::test_a_start_while_the_status_service_is_frozen_names_the_status_service[local]",),
        "every start waits STATUS_TIMEOUT again while the status service gives no answer",
    ),
    Mutant(
        "start-refused-while-status-answers",
        "gateway/breakers.py",
        (("        if self.silent:\n            self.check()", "        self.check()"),),
        (
            "tests/e2e/test_fault_matrix.py::"
            "test_a_status_outage_past_the_runs_end_goes_to_the_journal_and_the_resume_records_it",
        ),
        "starts are refused while the status service answers that its store is down, and just after",
    ),
)


def run(mutant: Mutant, tree: Path) -> tuple[bool, float, str]:
    """(killed, seconds, the tests' last line)."""
    path = tree / mutant.path
    original = path.read_text()
    text = original
    for old, new in mutant.edits:
        if text.count(old) != 1:
            raise SystemExit(f"{mutant.name}: {old!r} is not exactly once in {mutant.path}; update the mutant")
        text = text.replace(old, new)
    path.write_text(text)
    env = {**os.environ, "CI": "true"}
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:faulthandler", "--tb=no", "-x", *mutant.tests],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        path.write_text(original)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return done.returncode == 1, time.monotonic() - started, lines[-1] if lines else done.stderr[-300:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    if args.list or not chosen:
        for m in MUTANTS:
            print(f"{m.name:36} {m.path}: {m.says}")
        return
    with scratch_worktree("HEAD", prefix="mutants-") as tree:
        (tree / ".venv").symlink_to(ROOT / ".venv")
        # The tests pass unmutated first: a mutant is killed by a test that fails on it alone.
        tests = sorted({t for m in chosen for t in m.tests})
        base = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:faulthandler", "--tb=line", *tests],
            cwd=tree,
            env={**os.environ, "CI": "true"},
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if base.returncode != 0:
            print(base.stdout[-3000:], base.stderr[-2000:])
            raise SystemExit("the mutants' tests fail without a mutant: fix them first")
        print(f"unmutated: {base.stdout.strip().splitlines()[-1]}", flush=True)
        survived = []
        for mutant in chosen:
            killed, seconds, last = run(mutant, tree)
            print(f"{'killed  ' if killed else 'SURVIVED'} {mutant.name:36} {seconds:6.1f} s  {last}", flush=True)
            if not killed:
                survived.append(mutant.name)
        print(f"{len(chosen) - len(survived)} of {len(chosen)} mutants killed")
        if survived:
            sys.exit(1)


if __name__ == "__main__":
    main()
