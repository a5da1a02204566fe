"""`make run`: start status, storage, imagegen and the gateway (and a queue worker with
RUNS=queue), say what is really running and where, and stop all of them on Ctrl-C. Exits
non-zero when a port is taken or any process dies while starting or running."""

from __future__ import annotations

import signal
import socket
import sys
import time

from pydantic import ValidationError

from gateway.settings import GatewaySettings
from services.common.config import (
    ImagegenSettings,
    StatusSettings,
    StorageSettings,
    settings_errors,
    url_without_password,
)
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
    if status.store == "sqlite":
        store = f"SQLite ({status.sqlite_file})"
    elif status.store == "postgres":
        store = f"PostgreSQL ({url_without_password(status.database_url or '')})"
    else:
        store = f"Supabase ({status.supabase_url})"
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


def main() -> int:
    system = System.configure()
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
    try:
        system.start_all()
        if system.env.get("RUNS") == "queue":
            system.start_replica("worker", "gateway.worker", {})
        settle = time.monotonic() + SETTLE
        while time.monotonic() < settle:
            dead = [name for name, proc in system.procs.items() if proc.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while starting (its error is above)")
            time.sleep(0.1)
    except (RuntimeError, TimeoutError) as exc:
        print(f"could not start: {exc}", file=sys.stderr)
        system.stop_all()
        return 1
    print_where(system)
    return supervise(system)


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
    """Until Ctrl-C or SIGTERM (exit 0) or until a process dies (exit 1)."""
    stopping = False
    died = ""

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stopping:
            for name, proc in system.procs.items():
                if proc.poll() is not None:
                    died = f"{name} exited with {proc.returncode}"
                    print(f"{died}; stopping the rest", file=sys.stderr)
                    stopping = True
                    break
            time.sleep(0.2)
    finally:
        codes = system.stop_all()
        print(f"\nstopped: {', '.join(f'{n}={c}' for n, c in codes.items())}")
    return 1 if died else 0


if __name__ == "__main__":
    sys.exit(main())
