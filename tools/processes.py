"""Start the four processes of the system and stop them cleanly (used by `make run`,
the end-to-end tests and the benchmarks)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# name -> (python module, env var holding its port, default port)
SERVICES: dict[str, tuple[str, str, int]] = {
    "status": ("services.status", "STATUS_PORT", 50053),
    "storage": ("services.storage", "STORAGE_PORT", 50052),
    "imagegen": ("services.imagegen", "IMAGEGEN_PORT", 50051),
    "gateway": ("gateway", "GATEWAY_PORT", 8080),
}


# name -> (env var of its Prometheus port, default)
METRICS: dict[str, tuple[str, int]] = {
    "imagegen": ("IMAGEGEN_METRICS_PORT", 9101),
    "storage": ("STORAGE_METRICS_PORT", 9102),
    "status": ("STATUS_METRICS_PORT", 9103),
}


def _term_with_parent(parent: int) -> None:
    """In the child, before it runs Python: SIGTERM when its parent dies (PR_SET_PDEATHSIG),
    and no start at all if it died already."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()


@functools.cache
def quiet_ports() -> range:
    """Ports just below the kernel's ephemeral range (`ip_local_port_range`): an outgoing
    connection never takes one of them, where it may take a port that a bind to port 0
    handed out before its process binds it. Empty when that range starts too low. Read once."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return range(0)
    return range(max(10_000, low - 12_000), low)


def _bindable(port: int) -> int | None:
    """``port`` when a listener could bind it now (port 0: the kernel's pick)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return None
        return int(s.getsockname()[1])


def free_port() -> int:
    """A port nothing listens on now, out of the way of outgoing connections (`quiet_ports`,
    where there are any), and never one this process handed out before: two processes of
    one system (a gateway and a gRPC service, say) are never told to share one, even by a
    kernel that gives the same free port to two binds in a row."""
    quiet = quiet_ports()
    with _HANDED_OUT_LOCK:
        port = None
        for _ in range(100):
            port = _bindable(random.choice(quiet) if quiet else 0)
            if port is not None and port not in _HANDED_OUT:
                break
        if port is None:
            port = _bindable(0)
        if port is None:
            raise OSError("no free loopback port")
        _HANDED_OUT.add(port)  # after 100 repeats (a range nearly used up): the last one
        return port


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class System:
    """The four processes, configured by one environment."""

    env: dict[str, str]
    log_dir: Path | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Held around each start, from the fork to the process being tracked in `procs`, so a
    # supervisor's signal handler never stops between the two (tools/run_local.py).
    critical: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext
    # Children get SIGTERM when the process that started them dies, even by SIGKILL (Linux):
    # for a supervisor whose main thread lives as long as they do.
    die_with_parent: bool = False
    # The checkout whose code the processes run (bench/paired.py: another commit's worktree).
    root: Path = ROOT

    @classmethod
    def configure(
        cls,
        overrides: dict[str, str] | None = None,
        ports: dict[str, int] | None = None,
        log_dir: Path | None = None,
        root: Path = ROOT,
    ) -> System:
        env = dict(os.environ)
        env.update(overrides or {})
        for name, (_module, var, default) in SERVICES.items():
            port = (ports or {}).get(name, int(env.get(var, default)))
            env[var] = str(port)
            if ports is not None and name in METRICS and METRICS[name][0] not in (overrides or {}):
                env[METRICS[name][0]] = str(free_port())  # side by side with other systems
        env.setdefault("IMAGEGEN_ADDR", f"127.0.0.1:{env['IMAGEGEN_PORT']}")
        env.setdefault("STORAGE_ADDR", f"127.0.0.1:{env['STORAGE_PORT']}")
        env.setdefault("STATUS_ADDR", f"127.0.0.1:{env['STATUS_PORT']}")
        env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{env['GATEWAY_PORT']}")
        env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        return cls(env, log_dir, root=root)

    def port(self, name: str) -> int:
        return int(self.env[SERVICES[name][1]])

    def metrics_port(self, name: str) -> int:
        var, default = METRICS[name]
        return int(self.env.get(var, default))

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.port('gateway')}"

    def start_replica(
        self, name: str, module: str, env: dict[str, str], port: int | None = None, timeout: float = 30.0
    ) -> subprocess.Popen[bytes]:
        """Another process (a second gateway, a queue worker) with a few settings changed."""
        return self.start(name, timeout, module=module, env={**self.env, **env}, port=port)

    def start(
        self,
        name: str,
        timeout: float = 30.0,
        *,
        module: str | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        wait: bool = True,
    ) -> subprocess.Popen[bytes]:
        """Start one process; with ``wait``, return once it listens on its port."""
        module = module or SERVICES[name][0]
        out = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        with self.critical():
            proc = subprocess.Popen(
                [sys.executable, "-m", module],
                cwd=self.root,
                env=env or self.env,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                # Own session: a Ctrl-C reaches only the supervisor, which stops each in order.
                start_new_session=True,
                preexec_fn=functools.partial(_term_with_parent, os.getpid()) if self.die_with_parent else None,
            )
            self.procs[name] = proc
        if wait and (port is not None or name in SERVICES):
            wait_for_port(port if port is not None else self.port(name), timeout, proc)
        return proc

    def start_all(self, timeout: float = 30.0) -> None:
        """The four processes started at once (each waits for the others it calls on its
        own), then each waited for until it listens."""
        started = [(name, self.start(name, timeout, wait=False)) for name in SERVICES]
        for name, proc in started:
            wait_for_port(self.port(name), timeout, proc)

    def stop(self, name: str, grace: float = 15.0, sig: int = signal.SIGTERM) -> int:
        proc = self.procs.pop(name, None)
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
            proc.send_signal(signal.SIGCONT)  # a stopped (frozen) process acts on it only once continued
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return int(proc.returncode)

    def stop_all(self, grace: float = 15.0) -> dict[str, int]:
        """Gateways and workers first (they stop sending work to the others), then the gRPC
        services; each group is signalled at once and waited for together."""
        front = [name for name in self.procs if name not in SERVICES or name == "gateway"]
        back = [name for name in reversed(list(SERVICES)) if name in self.procs and name not in front]
        codes: dict[str, int] = {}
        for group in (front, back):
            for name in group:
                proc = self.procs[name]
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.send_signal(signal.SIGCONT)  # as systemd does: a frozen process could not stop
            deadline = time.monotonic() + grace
            for name in group:
                proc = self.procs.pop(name)
                try:
                    proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                codes[name] = int(proc.returncode)
        return codes
