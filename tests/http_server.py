"""A real HTTP server on 127.0.0.1 for tests of velocast's fetchers, answering from a script.

Each request takes the next ``Reply`` of ``script`` (429 with Retry-After, 500, a body cut short...)
and, once the script is used up, the answer of ``respond(request)``. Every request is recorded
with its path, query and arrival time, so a test can check what velocast asked and when.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlsplit


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None  # announce the whole body, send this many bytes, close the connection
    close_delimited: bool = False  # HTTP/1.0 style: no Content-Length, the end of the body is the close


@dataclass
class Received:
    path: str
    query: dict[str, str]
    at: float


class ScriptedServer:
    def __init__(self, respond: Callable[[Received], Reply], script: list[Reply] | None = None):
        self.respond = respond
        self.script = list(script or [])
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                request = Received(parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}, time.monotonic())
                with outer._lock:
                    outer.requests.append(request)
                    reply = outer.script.pop(0) if outer.script else None
                reply = reply or outer.respond(request)
                if reply.close_delimited:
                    self.protocol_version = "HTTP/1.0"
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.close_delimited:
                    self.send_header("Connection", "close")
                else:
                    self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                body = reply.body if reply.cut_after is None else reply.body[:reply.cut_after]
                self.wfile.write(body)
                self.wfile.flush()
                if reply.cut_after is not None or reply.close_delimited:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def refused_url() -> str:
    """A 127.0.0.1 URL where nothing listens (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
