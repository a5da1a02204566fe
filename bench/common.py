"""What every benchmark shares: figures, timing, the system as real processes, results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from tools.processes import ROOT, SERVICES, System, free_port

RESULTS = ROOT / "bench" / "results"


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    goal: str = ""
    passed: bool | None = None
    note: str = ""


@contextmanager
def cores_busy(count: int | None = None) -> Iterator[None]:
    """Every core (or ``count`` of them) kept busy by a process spinning, as `yes >
    /dev/null` would, while the block runs."""
    burners = [
        subprocess.Popen(["python3", "-c", "while True: pass"], stdout=subprocess.DEVNULL)
        for _ in range(count or os.cpu_count() or 2)
    ]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's peak resident set since it started."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def running_system(env: dict[str, str] | None = None, root: Path = ROOT) -> Iterator[System]:
    """The four processes (of the checkout at ``root``) on free ports with a throwaway data
    directory, quiet logs."""
    with tempfile.TemporaryDirectory(prefix="storyshort-bench-") as tmp:
        overrides = {"DATA_DIR": tmp, "OPENAI_API_KEY": "", "LOG_LEVEL": "WARNING", **(env or {})}
        ports = {name: free_port() for name in SERVICES}
        system = System.configure(overrides, ports, log_dir=Path(tmp) / "logs", root=root)
        try:
            system.start_all()
            yield system
        finally:
            system.stop_all()


def wait_done(client: httpx.Client, video_id: str, timeout: float = 300, every: float = 0.01) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict = client.get("/api/video-status", params={"videoId": video_id}).json()
        if body.get("status") in ("assets_generated", "failed") and not body.get("degraded"):
            return body
        time.sleep(every)
    raise TimeoutError(f"video {video_id} not done after {timeout} s")


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def machine() -> dict[str, object]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout)
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit.strip() + ("+dirty" if dirty else ""),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
    }


def write_results(figures: list[Figure], mode: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine()
    path = RESULTS / f"{info['date']}-{mode}.json".replace(":", "")
    path.write_text(json.dumps({**info, "mode": mode, "figures": [asdict(f) for f in figures]}, indent=2) + "\n")
    return path
