"""`make run` tells the truth: it refuses a taken port, exits non-zero when a process dies
while starting, and says what is really running (never a secret)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tools.processes import ROOT, free_port
from tools.run_local import describe


def make_run(env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def free_ports() -> dict[str, str]:
    names = ("GATEWAY_PORT", "IMAGEGEN_PORT", "STORAGE_PORT", "STATUS_PORT")
    metrics = ("IMAGEGEN_METRICS_PORT", "STORAGE_METRICS_PORT", "STATUS_METRICS_PORT")
    return {name: str(free_port()) for name in names + metrics}


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        done = make_run({**free_ports(), "GATEWAY_PORT": str(taken), "DATA_DIR": str(tmp_path)})
    assert done.returncode != 0
    assert f"port {taken} (GATEWAY_PORT) is in use by another process" in done.stderr
    assert "listening:" not in done.stdout


def test_a_process_that_dies_while_starting_makes_make_run_fail(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-chain.json"
    done = make_run({**free_ports(), "IMAGEGEN_CHAIN_FILE": str(missing), "DATA_DIR": str(tmp_path)})
    assert done.returncode != 0
    assert "could not start" in done.stderr and "before listening" in done.stderr
    assert f"IMAGEGEN_CHAIN_FILE {missing}: cannot read it as JSON" in done.stderr
    assert "listening:" not in done.stdout


def test_what_is_running_is_said_as_configured(tmp_path: Path) -> None:
    chain = tmp_path / "chain.json"
    lines = "\n".join(
        describe(
            {
                "STATUS_STORE": "postgres",
                "DATABASE_URL": "postgresql://app:s3cret-pw@db.example:5432/storyshort",
                "STORAGE_BACKEND": "supabase",
                "SUPABASE_URL": "https://abc.supabase.co",
                "IMAGEGEN_CHAIN_FILE": str(chain),
                "RUNS": "queue",
                "GATEWAY_API_KEY": "gw-key-123",
            }
        )
    )
    assert "PostgreSQL (postgresql://db.example:5432/storyshort)" in lines
    assert "Supabase Storage (https://abc.supabase.co), bucket renders-images" in lines
    assert f"the chain in {chain}, then the placeholder" in lines
    assert "queue on PostgreSQL" in lines and "POST needs GATEWAY_API_KEY" in lines
    assert "s3cret-pw" not in lines and "gw-key-123" not in lines
    embedded = "\n".join(describe({"OPENAI_API_KEY": ""}))
    assert "SQLite" in embedded and "the placeholder alone" in embedded and "auth            off" in embedded


def test_signed_in_users_are_said_with_where_tokens_are_checked() -> None:
    lines = "\n".join(
        describe({"AUTH_REQUIRED": "true", "SUPABASE_URL": "https://p.supabase.co", "SUPABASE_JWT_SECRET": "s" * 40})
    )
    assert "signed-in users required" in lines
    assert "https://p.supabase.co/auth/v1/.well-known/jwks.json and SUPABASE_JWT_SECRET" in lines
    assert "s" * 40 not in lines


MOMENTS = ("starting", "status listens", "imagegen listens", "gateway listens", "started")


def marked_processes(mark: str) -> list[int]:
    """Processes whose environment carries ``mark`` (every process make run started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if mark.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_at_any_moment_of_start_stops_everything(tmp_path: Path, sig: int, moment: str) -> None:
    """A Ctrl-C (SIGINT to make's process group) or a SIGTERM at each moment of start
    leaves no process running and no port held, and the next `make run` could start."""
    ports = free_ports()
    mark = f"run-local-test-{uuid.uuid4().hex}"
    env = {**os.environ, **ports, "DATA_DIR": str(tmp_path), "OPENAI_API_KEY": "", "RUN_LOCAL_TEST_MARK": mark}
    lines: list[str] = []
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's job is
    )
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()

    def said(text: str) -> bool:
        return any(text in line for line in lines)

    reached = {
        "starting": lambda: said("starting StoryShort"),
        "status listens": lambda: listening(int(ports["STATUS_PORT"])),
        "imagegen listens": lambda: listening(int(ports["IMAGEGEN_PORT"])),
        "gateway listens": lambda: listening(int(ports["GATEWAY_PORT"])),
        "started": lambda: said("Ctrl-C stops everything."),
    }[moment]
    try:
        assert wait_until(reached, timeout=60, every=0.005), f"never reached {moment!r}: {lines}"
        os.killpg(proc.pid, sig)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    reader.join(10)
    output = "".join(lines)
    try:
        assert "Traceback" not in output, output
        assert wait_until(lambda: not marked_processes(mark), timeout=5), (marked_processes(mark), output)
        held = [name for name, port in ports.items() if listening(int(port))]
        assert not held, (held, output)
        if moment != "starting":
            assert "stopped:" in output, output  # make run stopped them itself, in order
    finally:
        for pid in marked_processes(mark):  # whatever a failure left behind
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
