"""tools/processes.py: the ports handed to the processes a test or benchmark starts."""

from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Any

import pytest

from tools import processes


class RepeatingKernel:
    """A socket whose bind to port 0 gets the ports of a script, as a kernel may."""

    ports: list[int] = []

    def __init__(self, *args: Any) -> None:
        self.port = 0

    def __enter__(self) -> RepeatingKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def bind(self, address: tuple[str, int]) -> None:
        assert address == ("127.0.0.1", 0)
        self.port = RepeatingKernel.ports.pop(0)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def test_a_port_the_kernel_gives_twice_is_handed_out_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "_HANDED_OUT", set())
    monkeypatch.setattr(processes, "quiet_ports", lambda: range(0))  # the kernel picks (bind to port 0)
    monkeypatch.setattr(socket, "socket", RepeatingKernel)
    RepeatingKernel.ports = [40001, 40001, 40001, 40002, 40001, 40003]
    assert [processes.free_port(), processes.free_port(), processes.free_port()] == [40001, 40002, 40003]
    assert RepeatingKernel.ports == [], "every repeat was asked again"


def test_free_ports_are_free_distinct_and_out_of_the_way_of_outgoing_connections() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    quiet = processes.quiet_ports()
    assert quiet == range(max(10_000, low - 12_000), low)
    ports = [processes.free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    if quiet:  # every machine here (32768-60999): below where connect() takes its ports
        assert all(port in quiet for port in ports), ports
    for port in ports[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # nothing holds it


def test_a_quiet_port_that_is_taken_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        other = processes.free_port()
        picks = iter([taken, taken, other])
        monkeypatch.setattr(processes, "_HANDED_OUT", set())
        monkeypatch.setattr(processes, "quiet_ports", lambda: range(1, 65536))
        monkeypatch.setattr(random, "choice", lambda _ports: next(picks))
        assert processes.free_port() == other
