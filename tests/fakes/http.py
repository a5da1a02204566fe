"""What the fake servers share: a threaded HTTP server on a free loopback port that starts,
stops (ending any request held open) and works as a context manager, and a quiet handler
that answers JSON or bytes in one go."""

from __future__ import annotations

import functools
import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class Server(ThreadingHTTPServer):
    # A real server's accept backlog, not socketserver's 5: fifty clients connecting at once
    # overflow that on a busy machine (the likely cause of one ReadError in a CI run of the
    # test of fifty concurrent writes through the Supabase store; not reproduced here).
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._open: set[socket.socket] = set()  # every connection not yet closed
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def hang_up(self) -> None:
        """Close every connection still open, as a server that goes away does: a request
        held (Hang, a latency not yet over) ends for its client at once, instead of the
        handler returning without an answer and the connection waiting, kept alive, for the
        client's next request while the client waits for this one's answer."""
        with self._open_lock:
            held = list(self._open)
        for connection in held:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # closed meanwhile

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (a timeout, a cancelled call) is part of what is tested,
        # not the server's error: only anything else is printed.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LoopbackServer:
    def __init__(self, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        self.stopping = threading.Event()  # hanging handlers wait on it, so stop() ends them
        self.server = Server(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        # serve_forever looks for a shutdown between requests every poll interval: its
        # default 0.5 s was half a second of every test's teardown (11 s of test_auth alone).
        serve = functools.partial(self.server.serve_forever, poll_interval=0.02)
        self.thread = threading.Thread(target=serve, name=name, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> Self:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.hang_up()
        self.server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes

    def log_message(self, format: str, *args: Any) -> None:
        return

    def send(
        self,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
