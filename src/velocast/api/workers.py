"""Several API worker processes on one port, each with its own listening socket (Linux ``SO_REUSEPORT``).

uvicorn's ``--workers`` shares one listening socket: every worker's event loop wakes on a new
connection and the first to run accepts every connection then waiting. Clients that keep their
connections open (a gateway's pool, a load generator) thus end up unevenly spread: 11 and 5 of 16
``wrk`` connections were measured, and the requests of the busier worker wait twice as long. Here
each worker listens on a socket of its own, all bound to the port with ``SO_REUSEPORT``, and the
kernel spreads the connections over them (by a hash of each connection's addresses).

The sockets are bound by this (parent) process, one per worker slot, and kept while it runs: a
worker that dies is replaced on its slot's socket (connections the kernel gave that socket meanwhile
wait for it). Before binding, the port is checked free with a plain socket, so a second server on
the same port fails as it would without ``SO_REUSEPORT`` instead of sharing its connections.
Elsewhere than Linux (no kernel balancing), ``velocast serve`` uses uvicorn's workers.

The kernel's hash spreads connections at random, not evenly (16 over 2 sockets: 5 and 11 a fifth
of the time). So the workers also share how many connections each holds (``ConnectionShare``: the
clients that sent a request in the last ``ACTIVE_SECONDS``, in an array of shared memory), and a
worker holding more than its even share while another holds less answers one request with
``Connection: close`` (``RebalanceMiddleware``, at most every ``CLOSE_EVERY_SECONDS``): the client
connects again, and the kernel hashes the new connection anew, until the shares are even.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import sys
import threading
import time
from typing import Any

from uvicorn.config import STARTUP_FAILURE  # the exit code of a worker that could not start

log = logging.getLogger(__name__)

APP = "velocast.api.app:create_app"
STOP_SECONDS = 15.0  # after SIGTERM, how long a worker may take to finish its requests before it is killed
ACTIVE_SECONDS = 1.0  # a connection counts as open when its client sent a request within this time
CLOSE_EVERY_SECONDS = 0.25  # a worker with more than its share asks at most one client per this time to reconnect


class ConnectionShare:
    """This worker's count of open connections beside the other workers' (``counts``: shared memory,
    one slot per worker), and whether a request should close its connection to even them out."""

    def __init__(self, counts: Any, slot: int, clock: Any = time.monotonic):
        self.counts, self.slot, self.clock = counts, slot, clock
        self.seen: dict[tuple, float] = {}  # client (host, port) -> when it last sent a request
        self.last_close = -1e9
        self.lock = threading.Lock()

    def should_close(self, client: tuple | None) -> bool:
        """Record a request of ``client``; True when its connection should close after the answer."""
        if client is None:
            return False
        now = self.clock()
        with self.lock:
            self.seen[client] = now
            if now - self.last_close < CLOSE_EVERY_SECONDS:
                return False
            self.seen = {c: t for c, t in self.seen.items() if now - t <= ACTIVE_SECONDS}
            mine = len(self.seen)
            self.counts[self.slot] = mine
            counts = list(self.counts)
            even = -(-sum(counts) // len(counts))  # the largest share an even spread gives a worker
            if mine <= even or min(counts) >= even:
                return False
            self.last_close = now
            del self.seen[client]  # it will connect again, maybe here
            return True


class RebalanceMiddleware:
    """Pure ASGI middleware: ``Connection: close`` on an answer when ``share`` says so."""

    def __init__(self, app: Any, share: ConnectionShare):
        self.app, self.share = app, share

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.share.should_close(tuple(scope.get("client") or ()) or None):
            await self.app(scope, receive, send)
            return

        async def closing(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing)


_share: ConnectionShare | None = None


def current_share() -> ConnectionShare | None:
    """The connection share of this worker process (None: not one of ``Workers``')."""
    return _share


def balanced() -> bool:
    """Can workers get one socket each with the kernel spreading connections over them?"""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _check_port_free(host: str, port: int) -> None:
    probe = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections of a past run in TIME_WAIT
        probe.bind((host, port))
    except OSError as exc:  # the port the user chose: one line, not a trace
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    finally:
        probe.close()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def listening_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A socket listening on ``host:port`` beside others of the same port (``SO_REUSEPORT``)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def _work(sock: socket.socket, options: dict[str, Any], counts: Any, slot: int) -> None:
    """One worker process: uvicorn serving the app on its slot's socket."""
    import uvicorn

    from velocast.tracking.skops_io import import_skops

    import_skops()  # before the app imports MLflow: the champion it loads at start is read with skops

    global _share
    _share = ConnectionShare(counts, slot)
    uvicorn.Server(uvicorn.Config(APP, factory=True, **options)).run(sockets=[sock])


def _forget_metrics(pid: int | None) -> None:
    """Drop the live Prometheus series of a worker that died without its shutdown (killed, crashed)."""
    from velocast.api.metrics import multiprocess_dir

    folder = multiprocess_dir()
    if folder is not None and pid is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, folder)


class Workers:
    """``count`` worker processes, each serving the app on its own socket of ``host:port``."""

    def __init__(self, host: str, port: int, count: int, **options: Any):
        self.host, self.port, self.count, self.options = host, port, count, options
        self.sockets: list[socket.socket] = []
        self.processes: list[Any] = []
        self.stopping = threading.Event()
        self._context = multiprocessing.get_context("spawn")
        self.counts = self._context.Array("i", count, lock=False)  # each worker's open connections

    def _start(self, slot: int) -> Any:
        self.counts[slot] = 0
        process = self._context.Process(target=_work, args=(self.sockets[slot], self.options, self.counts, slot),
                                        name=f"velocast-api-{slot}", daemon=False)
        process.start()
        return process

    def run(self) -> int:
        """Serve until SIGINT or SIGTERM; the exit code (1 when a worker could not start)."""
        _check_port_free(self.host, self.port)
        self.sockets = [listening_socket(self.host, self.port) for _ in range(self.count)]
        previous = {sig: signal.signal(sig, lambda *_: self.stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            self.processes = [self._start(slot) for slot in range(self.count)]
            log.info("%d API workers, one socket each on %s:%d", self.count, self.host, self.port)
            while not self.stopping.wait(0.5):
                code = self._replace_dead()
                if code:
                    break
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for sock in self.sockets:
                sock.close()
        return code

    def _replace_dead(self) -> int:
        for slot, process in enumerate(self.processes):
            if process.is_alive() or self.stopping.is_set():
                continue
            if process.exitcode == STARTUP_FAILURE:  # it would fail the same way again
                log.error("API worker %d (pid %s) could not start: stopping", slot, process.pid)
                return 1
            log.warning("API worker %d (pid %s) exited with code %s: starting another", slot, process.pid,
                        process.exitcode)
            _forget_metrics(process.pid)
            self.processes[slot] = self._start(slot)
        return 0

    def _stop_all(self) -> None:  # each worker drops its own live metric series at its shutdown
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + STOP_SECONDS
        for process in self.processes:
            process.join(max(deadline - time.monotonic(), 0.1))
            if process.is_alive():
                log.warning("API worker pid %s did not stop in %.0f s: killed", process.pid, STOP_SECONDS)
                process.kill()
                process.join()


__all__ = ["ConnectionShare", "RebalanceMiddleware", "Workers", "balanced", "current_share", "listening_socket"]
