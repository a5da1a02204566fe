"""tools/processes.py: the ports handed to the processes a test or benchmark starts."""

from __future__ import annotations

import socket
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
    monkeypatch.setattr(socket, "socket", RepeatingKernel)
    RepeatingKernel.ports = [40001, 40001, 40001, 40002, 40001, 40003]
    assert [processes.free_port(), processes.free_port(), processes.free_port()] == [40001, 40002, 40003]
    assert RepeatingKernel.ports == [], "every repeat was asked again"


def test_free_ports_are_free_and_distinct() -> None:
    ports = [processes.free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    for port in ports[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # nothing holds it
