"""`make run`: start status, storage, imagegen and the gateway on embedded defaults, print
where they listen and a curl line to try, and stop all of them on Ctrl-C."""

from __future__ import annotations

import signal
import sys
import time

from tools.processes import SERVICES, System


def main() -> int:
    system = System.configure()
    print("starting StoryShort preview images (embedded defaults: SQLite status, local storage)...", flush=True)
    try:
        system.start_all()
    except (RuntimeError, TimeoutError) as exc:
        print(f"could not start: {exc}", file=sys.stderr)
        system.stop_all()
        return 1
    url = system.gateway_url
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
        f"  open {url}/docs for the API\n\nCtrl-C stops everything.",
        flush=True,
    )
    stopping = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stopping:
            for name, proc in system.procs.items():
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; stopping the rest", file=sys.stderr)
                    stopping = True
                    break
            time.sleep(0.2)
    finally:
        codes = system.stop_all()
        print(f"\nstopped: {', '.join(f'{n}={c}' for n, c in codes.items())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
