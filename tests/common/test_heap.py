"""Each process, once started, keeps what start-up loaded out of the cycle collector's full
passes (services/common/memory.py: settle_heap). Checked in a process of its own, as the
services run: freezing the test process's heap would change every test after this one."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tools.processes import ROOT

GRPC_SERVICE = """
    import asyncio, gc, os, signal
    from services.common.server import serve_until_signal, start_server

    async def main():
        running = await start_server("127.0.0.1", 0, [])
        before = gc.get_freeze_count()

        def serving():  # the first thing the loop runs once serve_until_signal waits
            print(before, gc.get_freeze_count())
            os.kill(os.getpid(), signal.SIGTERM)

        asyncio.get_running_loop().call_soon(serving)
        await serve_until_signal(running, 1.0)

    asyncio.run(main())
"""

GATEWAY = """
    import asyncio, gc
    import uvicorn
    from gateway.__main__ import GatewayServer
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    async def main():
        app = create_app(GatewaySettings())
        server = GatewayServer(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None), app, 0.0)
        before = gc.get_freeze_count()
        serving = asyncio.create_task(server.serve())
        while not server.started:
            assert not serving.done(), "the gateway stopped before it started"
            await asyncio.sleep(0.01)
        print(before, gc.get_freeze_count())
        server.should_exit = True
        await serving

    asyncio.run(main())
"""


def frozen(script: str) -> tuple[int, int]:
    """The collector's frozen-object count before and after the process started serving."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    before, after = (int(n) for n in done.stdout.split()[-2:])
    return before, after


def test_a_grpc_service_freezes_its_start_up_heap_once_it_serves() -> None:
    before, after = frozen(GRPC_SERVICE)
    # Everything gRPC, protobuf and the services' modules loaded: tens of thousands of objects.
    assert before == 0 and after > 20_000, (before, after)


def test_the_gateway_freezes_its_start_up_heap_once_it_serves() -> None:
    before, after = frozen(GATEWAY)
    assert before == 0 and after > 20_000, (before, after)
