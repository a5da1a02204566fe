"""Debian's Chromium, headless, driven over the DevTools protocol (a websocket on loopback):
open a page at a given window width, evaluate JavaScript in it, take a screenshot. What a
browser does (layout, CORS, EventSource) is tested in a real one."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect
from websockets.sync.connection import Connection

from tests.conftest import IN_CI, wait_until
from tools.processes import free_port

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_or_skip() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if IN_CI:
            pytest.fail("CI=true and no chromium: .ci/run installs Debian's chromium")
        pytest.skip("no chromium on this machine (apt-get install chromium); CI installs it")
    return browser


class Page:
    def __init__(self, socket: Connection, profile: str) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self.profile = profile  # the browser's own profile directory

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            answer = json.loads(self._socket.recv(timeout=30))
            if answer.get("id") == message_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result

    def open(self, url: str, width: int, height: int = 800) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited when it is a promise)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        """Evaluate until the expression is truthy (bounded); answer its value. It may throw
        meanwhile (the page is still loading)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.05)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path


@contextmanager
def chromium() -> Iterator[Page]:
    """A fresh headless Chromium (own profile, own process group) and its first tab."""
    browser = chromium_or_skip()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="storyshort-chromium-") as profile:
        proc = subprocess.Popen(
            [browser, *FLAGS, f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its helpers in its group, stopped as one
        )
        try:
            socket_url = _page_socket(port)
            with connect(socket_url, max_size=64 * 1024 * 1024) as socket:
                yield Page(socket, profile)
        finally:
            _stop(proc, profile)


def _using_profile(profile: str) -> list[int]:
    """Processes started with this profile: Chromium's helpers (zygotes, renderers, the GPU
    and network processes) outlive the browser by seconds, writing into it as they close."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # ended meanwhile
                if profile.encode() in Path(entry.path, "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def _stop(proc: subprocess.Popen[bytes], profile: str) -> None:
    """Stop the browser and every process of its profile (its group first; any left after
    15 s are killed), so that the profile is removed with nothing writing into it and no
    renderer goes on using a core the next tests need."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if not wait_until(lambda: not _using_profile(profile), 15.0, every=0.05):
        for pid in _using_profile(profile):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _using_profile(profile), 5.0, every=0.05)


def _page_socket(port: int, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            targets = httpx.get(f"http://127.0.0.1:{port}/json", timeout=2).json()
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"chromium's DevTools did not answer on port {port}")
