"""`make bench` (or `make bench-quick`): run every benchmark against real processes on
loopback, print one table, write the figures to bench/results/ and bench/RESULTS.md."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable

from bench import (
    bench_auth,
    bench_events,
    bench_imagegen,
    bench_pipeline,
    bench_previews,
    bench_shared,
    bench_status,
    bench_storage,
    bench_workers,
)
from bench.common import RESULTS, Figure, machine, write_results

BENCHMARKS: dict[str, Callable[[bool], list[Figure]]] = {
    "pipeline": bench_pipeline.pipeline,
    "hanging-primary": bench_imagegen.hanging_primary,
    "failing-primary": bench_imagegen.failing_primary,
    "recovering-primary": bench_imagegen.recovering_primary,
    "heavy-tail": bench_imagegen.heavy_tail,
    "transient-faults": bench_imagegen.transient_faults,
    "status-reads": bench_status.status_reads,
    "status-frozen": bench_status.status_frozen,
    "flood": bench_status.flood,
    "memory": bench_storage.memory,
    "upload-throughput": bench_storage.throughput,
    "upload-supabase": bench_storage.supabase,
    "image-answer": bench_imagegen.image_answer,
    "shared-limit": bench_shared.shared_limit,
    "load": bench_pipeline.load,
    "workers": bench_workers.workers,
    "events": bench_events.events,
    "previews": bench_previews.previews,
    "auth-reads": bench_auth.auth_reads,
}
MARK_START, MARK_END = "<!-- figures:start -->", "<!-- figures:end -->"


def table(figures: list[Figure]) -> str:
    rows = ["| figure | value | goal | result |", "| --- | --- | --- | --- |"]
    for f in figures:
        result = "" if f.passed is None else ("pass" if f.passed else "MISS")
        note = f" ({f.note})" if f.note else ""
        rows.append(f"| {f.name}{note} | {f.value:g} {f.unit} | {f.goal} | {result} |")
    return "\n".join(rows)


def update_results_md(figures: list[Figure], mode: str) -> None:
    path = RESULTS.parent / "RESULTS.md"
    info = machine()
    block = (
        f"{MARK_START}\nLatest `{mode}` run: {info['date']}, commit {info['commit']}, Python {info['python']}, "
        f"{info['cpus']} CPUs ({info['machine']}).\n\n{table(figures)}\n{MARK_END}"
    )
    text = path.read_text() if path.exists() else f"# Benchmark results\n\n{MARK_START}\n{MARK_END}\n"
    head, _, rest = text.partition(MARK_START)
    _, _, tail = rest.partition(MARK_END)
    path.write_text(head + block + tail)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and smaller loads (under 2 minutes)")
    parser.add_argument("--only", nargs="*", choices=list(BENCHMARKS), help="run only these")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results alone")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    figures: list[Figure] = []
    failed = False
    for name in args.only or list(BENCHMARKS):
        started = time.perf_counter()
        print(f"running {name}...", file=sys.stderr, flush=True)
        try:
            figures += BENCHMARKS[name](args.quick)
        except Exception:
            failed = True
            traceback.print_exc()
            figures.append(Figure(f"{name}: did not finish", 0, "", "runs", False))
        print(f"  {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    print(table(figures))
    if not args.no_write:
        print(f"\nwritten: {write_results(figures, mode)}")
        if mode == "full":  # the committed table is the full run's; a quick run never replaces it
            update_results_md(figures, mode)
    missed = [f.name for f in figures if f.passed is False]
    if missed:
        print(f"\ngoals missed: {', '.join(missed)}")
    return 1 if failed or missed else 0


if __name__ == "__main__":
    sys.exit(main())
