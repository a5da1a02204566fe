"""`make run`: start status, storage, imagegen and the gateway (and a queue worker with
RUNS=queue), say what is really running and where, and stop all of them on Ctrl-C. Exits
non-zero when a port is taken or any process dies while starting or running.

Every way out stops what was started: SIGINT or SIGTERM at any moment (handled from the
first line, never between a fork and the child being tracked), an error, a child's death;
and should this process be killed outright, its children get SIGTERM from the kernel."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import time
from collections.abc import Iterator

from pydantic import ValidationError

from gateway.settings import GatewaySettings
from services.common.config import (
    ImagegenSettings,
    StatusSettings,
    StorageSettings,
    settings_errors,
)
from services.status.stores.registry import describe_store
from tools.processes import METRICS, SERVICES, System

# Seconds every process must stay up after it listens before the system counts as started.
SETTLE = 1.5


def taken_ports(system: System) -> list[str]:
    """Each port this system would listen on that another process already holds."""
    wanted = [(var, system.env[var]) for _module, var, _default in SERVICES.values()]
    wanted += [(var, system.env.get(var, str(default))) for var, default in METRICS.values()]
    problems = []
    for var, value in wanted:
        port = int(value)
        if port == 0:
            continue
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                problems.append(f"port {port} ({var}) is in use by another process: stop it, or set {var}=<free port>")
    return problems


def describe(env: dict[str, str]) -> list[str]:
    """What the configuration says will run, in words (never a secret)."""
    given = {k: v for k, v in env.items() if v != ""}
    status = StatusSettings.model_validate(given)
    storage = StorageSettings.model_validate(given)
    imagegen = ImagegenSettings.model_validate(given)
    gateway = GatewaySettings.model_validate(given)
    store = describe_store(status)
    if storage.backend == "local":
        objects = f"local directory {storage.storage_root}, served by the gateway"
    else:
        objects = f"Supabase Storage ({storage.supabase_url}), bucket {storage.bucket}"
    if imagegen.chain_file is not None:
        chain = f"the chain in {imagegen.chain_file}, then the placeholder"
    elif imagegen.openai_api_key and imagegen.chain:
        models = ", ".join(imagegen.chain)
        chain = f"{models} at {imagegen.openai_base_url} (quality {imagegen.quality}), then the placeholder"
    else:
        chain = "the placeholder alone (no OPENAI_API_KEY)"
    runs = "queue on PostgreSQL, run by one worker" if gateway.runs == "queue" else "inside the gateway"
    if gateway.auth_required:
        keys = gateway.jwks_url or "no JWKS"
        legacy = " and SUPABASE_JWT_SECRET" if gateway.supabase_jwt_secret else ""
        auth = f"signed-in users required (tokens checked against {keys}{legacy})"
    else:
        auth = "POST needs GATEWAY_API_KEY" if gateway.api_key else "off (no GATEWAY_API_KEY)"
    return [
        f"  status store    {store}",
        f"  image storage   {objects}",
        f"  provider chain  {chain}",
        f"  video runs      {runs}",
        f"  auth            {auth}",
    ]


class Stop(Exception):
    """SIGINT or SIGTERM: stop what was started, whatever moment it came at."""


class Signals:
    """SIGINT and SIGTERM, handled from the first moment: one raises Stop wherever the
    supervisor is, except inside a critical section (a child forked but not yet tracked),
    where it waits for the section's end; once stopping, they are only noted."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.held = 0
        self.stopping = False

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, sig: int, _frame: object) -> None:
        self.received = self.received or sig
        if not self.held and not self.stopping:
            self._stop()

    def _stop(self) -> None:
        """Raise Stop, once: signals after it (make relays the terminal's to its child as
        well) are only noted, never raised inside the stop itself."""
        self.stopping = True
        assert self.received is not None
        raise Stop(signal.Signals(self.received).name)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1
        if not self.held and self.received and not self.stopping:
            self._stop()


def main() -> int:
    signals = Signals()
    signals.install()  # before anything starts: no signal is lost
    system = System.configure()
    system.critical = signals.critical
    system.die_with_parent = True  # the last resort: should this process die all the same
    code = 1
    try:
        try:
            running = describe(system.env)
        except ValidationError as exc:
            print(settings_errors(exc), file=sys.stderr)
            return 2
        taken = taken_ports(system)
        if taken:
            print("cannot start:\n  " + "\n  ".join(taken), file=sys.stderr)
            return 1
        print("starting StoryShort preview images:\n" + "\n".join(running), flush=True)
        start(system)
        print_where(system)
        code = supervise(system)
    except Stop as why:
        print(f"\n{why} received; stopping what was started", file=sys.stderr, flush=True)
        code = 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"could not start: {exc}", file=sys.stderr)
    finally:
        signals.stopping = True  # from here a signal is only noted: the stop is under way
        codes = system.stop_all()
        if codes:
            print(f"stopped: {', '.join(f'{n}={c}' for n, c in codes.items())}", flush=True)
    return code


def start(system: System) -> None:
    """Every process, then SETTLE seconds in which none may die."""
    system.start_all()
    if system.env.get("RUNS") == "queue":
        system.start_replica("worker", "gateway.worker", {})
    settle = time.monotonic() + SETTLE
    while time.monotonic() < settle:
        dead = [name for name, proc in system.procs.items() if proc.poll() is not None]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited while starting (its error is above)")
        time.sleep(0.1)


def print_where(system: System) -> None:
    url = system.gateway_url
    port = system.port("gateway")
    demo = "make demo" if port == 8080 else f"GATEWAY_PORT={port} make demo"
    print("\nlistening:")
    for name, (_module, var, _default) in SERVICES.items():
        kind = "HTTP" if name == "gateway" else "gRPC"
        metrics = f"  metrics :{system.metrics_port(name)}" if name != "gateway" else "  metrics /metrics"
        print(f"  {name:9} {kind} 127.0.0.1:{system.env[var]}{metrics}")
    print(
        "\ntry:\n"
        f"  curl -s -X POST {url}/api/generate-preview-images -H 'Content-Type: application/json' "
        '-d \'{"videoId":"demo-1","scenes":[{"prompt":"a fox in the snow"},{"prompt":"a lighthouse at dusk"}]}\'\n'
        f"  curl -s '{url}/api/video-status?videoId=demo-1'\n"
        f"  open {url}/videos/demo-1 to watch the video's page\n"
        f"  {demo} for a ten-scene story\n"
        f"  open {url}/docs for the API\n\nCtrl-C stops everything.",
        flush=True,
    )


def supervise(system: System) -> int:
    """Until a process dies (1); Ctrl-C or SIGTERM raise Stop (main stops everything)."""
    while True:
        for name, proc in system.procs.items():
            if proc.poll() is not None:
                print(f"{name} exited with {proc.returncode}; stopping the rest", file=sys.stderr)
                return 1
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
