"""`python -m bench.paired REV [--pairs N]`: the pipeline benchmark's 30-scene video on this
checkout (A) against another commit (B), both systems up side by side, videos posted to
them in turn (A B, B A, A B, ...).

Why: on a shared two-core machine the same code measures 1.04 in one batch of runs and
1.06 in the next (the machine's own speed moves: a process's CPU time per scene changes
by a fifth between batches), so two batches run one after the other cannot tell a change
worth half a percent from the machine. Runs of A and B that alternate share the machine's
moments; their differences, taken pair by pair, can. The figures: each side's medians
(seen done / ideal as in `bench_pipeline`, and its timeline), the median of the paired
differences B - A, and in how many pairs B was faster; and each process's CPU time per
scene (its threads' schedstat around each video), which a busy machine moves far less than
it moves wall time. Run it once with REV = HEAD to see
the noise of the method itself (A against A)."""

from __future__ import annotations

import argparse
import math
import statistics
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench.bench_pipeline import MODEL, STAGES, describe, one_video, provider_env, story
from bench.common import Figure, running_system, wait_done, write_results
from bench.run import table
from tests.fakes.openai_fake import FakeOpenAI, Ok, model_entry, warm_answers
from tools.processes import ROOT
from tools.worktree import scratch_worktree

SCENES, LANES, LATENCY = 30, 3, 0.2
# Whose CPU time per scene is measured, video by video.
PROCESSES = ("imagegen", "gateway", "storage", "status")


def cpu_ns(pid: int) -> int:
    """Nanoseconds the process has run on a CPU, all its threads (the first field of each
    thread's /proc schedstat): finer than the 10 ms ticks of /proc/<pid>/stat."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile
    return total


def compare(rev: str, pairs: int) -> dict[str, dict[str, list[float]]]:
    ideal = math.ceil(SCENES / LANES) * LATENCY
    runs: dict[str, dict[str, list[float]]] = {}
    warm_answers()
    with ExitStack() as stack:
        sides = {}
        other = stack.enter_context(scratch_worktree(rev, prefix="storyshort-paired-"))
        for side, root in (("A", ROOT), ("B", other)):
            fake = stack.enter_context(FakeOpenAI(models=[model_entry(MODEL)]))
            fake.script(MODEL, Ok(latency=LATENCY, size=(0, 0)))
            system = stack.enter_context(running_system(provider_env(fake), root=root))
            client = stack.enter_context(httpx.Client(base_url=system.gateway_url, timeout=30))
            client.post("/api/generate-preview-images", json={"videoId": "warm", "scenes": story(3)})
            wait_done(client, "warm")
            pids = {name: system.procs[name].pid for name in PROCESSES}
            sides[side] = (fake, client, pids)
            runs[side] = {"ratio": [], **{name: [] for name in STAGES}}
            runs[side] |= {f"{name}_cpu_ms": [] for name in PROCESSES}
        for pair in range(pairs):
            for side in ("A", "B") if pair % 2 == 0 else ("B", "A"):
                fake, client, pids = sides[side]
                before = {name: cpu_ns(pid) for name, pid in pids.items()}
                seconds, stages = one_video(fake, client, f"pair{pair}", SCENES, LANES, LATENCY)
                wait_done(client, f"pair{pair}")
                for name, pid in pids.items():  # per scene, the closing status read included
                    runs[side][f"{name}_cpu_ms"].append((cpu_ns(pid) - before[name]) / 1e6 / SCENES)
                runs[side]["ratio"].append(seconds / ideal)
                for name in STAGES:
                    runs[side][name].append(stages[name])
    return runs


def figures(rev: str, runs: dict[str, dict[str, list[float]]]) -> list[Figure]:
    out = []
    for side, label in (("A", "this checkout"), ("B", rev)):
        m = {name: statistics.median(values) for name, values in runs[side].items()}
        out.append(
            Figure(
                f"paired, {side} ({label}): 30 scenes seen done by the client / ideal",
                round(m["ratio"], 4),
                "ratio",
                note=f"{describe(m)} (ms, as in `pipeline`); medians of {len(runs[side]['ratio'])} videos",
            )
        )
    for name in PROCESSES:
        a, b = (runs[side][f"{name}_cpu_ms"] for side in ("A", "B"))
        out.append(
            Figure(
                f"paired: {name}'s CPU time per scene, A (this checkout) and B ({rev})",
                round(statistics.median(a), 2),
                "ms",
                note=f"B {statistics.median(b):.2f}; B - A pair by pair "
                f"{statistics.median(y - x for x, y in zip(a, b, strict=True)):+.2f} (median)",
            )
        )
    differences = [b - a for a, b in zip(runs["A"]["ratio"], runs["B"]["ratio"], strict=True)]
    faster = sum(1 for d in differences if d < 0)
    out.append(
        Figure(
            f"paired: B ({rev}) - A (this checkout), seen done / ideal, pair by pair",
            round(statistics.median(differences), 4),
            "ratio",
            note=f"median; B faster in {faster} of {len(differences)} pairs",
        )
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the commit to compare this checkout against (HEAD: the method's own noise)")
    parser.add_argument("--pairs", type=int, default=12, help="videos per side (default 12, about a minute)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results alone")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    found = figures(args.rev, compare(args.rev, args.pairs))
    print(table(found))
    if not args.no_write:
        print(f"\nwritten: {write_results(found, 'paired')}")


if __name__ == "__main__":
    main()
