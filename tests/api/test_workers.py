"""Several API workers on one port: a socket each, connections evened out, a second server refused."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from velocast.api.workers import (
    ACTIVE_SECONDS,
    CLOSE_EVERY_SECONDS,
    ConnectionShare,
    RebalanceMiddleware,
    _check_port_free,
    balanced,
    listening_socket,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_worker_with_more_than_its_share_asks_one_client_at_a_time_to_reconnect() -> None:
    clock = Clock()
    counts = [0, 5]  # shared memory: the other worker holds 5 connections
    busy = ConnectionShare(counts, 0, clock)
    closed = [busy.should_close(("127.0.0.1", 1000 + port)) for port in range(11)]
    assert closed.index(True) == 6 and sum(closed) == 1  # 7 here against 5 there: one more than even
    assert counts == [7, 5]
    clock.now += CLOSE_EVERY_SECONDS  # at most one per interval: the next request may be asked
    assert busy.should_close(("127.0.0.1", 1000))  # 10 clients still active here (one left) against 5
    assert counts == [10, 5]
    counts[1] = 7  # both went to the other worker: 9 here, 7 there, even is 8
    clock.now += CLOSE_EVERY_SECONDS
    assert busy.should_close(("127.0.0.1", 1001))
    counts[1] = 8  # 8 and 8: nobody leaves any more
    clock.now += CLOSE_EVERY_SECONDS
    staying = [1002, 1003, 1004, 1005, 1007, 1008, 1009, 1010]  # 1006, 1000 and 1001 were asked to leave
    assert not any(busy.should_close(("127.0.0.1", port)) for port in staying)
    assert counts == [8, 8]
    quiet = ConnectionShare(counts, 1, clock)
    clock.now += CLOSE_EVERY_SECONDS
    assert not any(quiet.should_close(("127.0.0.1", 2000 + port)) for port in range(8))  # never above its share
    # clients silent for longer than ACTIVE_SECONDS no longer count
    clock.now += ACTIVE_SECONDS + CLOSE_EVERY_SECONDS
    assert not busy.should_close(("127.0.0.1", 1005))
    assert counts[0] == 1
    assert not busy.should_close(None)  # no client address (a Unix socket): never closed


def _answer(middleware: RebalanceMiddleware, client: tuple[str, int]) -> list[tuple[bytes, bytes]]:
    """The headers of the answer ``middleware`` lets its app give to a request of ``client``."""
    sent: list[dict[str, Any]] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    middleware.app = app
    asyncio.run(middleware({"type": "http", "client": list(client)}, receive, send))
    assert sent[1] == {"type": "http.response.body", "body": b"ok"}
    return sent[0]["headers"]


def test_the_middleware_closes_the_connection_only_when_the_share_says_so() -> None:
    middleware = RebalanceMiddleware(None, ConnectionShare([0, 0], 0, Clock()))
    assert _answer(middleware, ("127.0.0.1", 1)) == [(b"content-type", b"text/plain")]  # 1 and 0: even
    assert _answer(middleware, ("127.0.0.1", 2)) == [(b"content-type", b"text/plain"), (b"connection", b"close")]


def test_port_already_listened_on_is_refused_in_one_line() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(ValueError, match=f"cannot listen on 127.0.0.1:{port}"):
            _check_port_free("127.0.0.1", port)
    finally:
        taken.close()


@pytest.mark.skipif(not balanced(), reason="one socket per worker needs Linux SO_REUSEPORT")
def test_workers_sockets_share_the_port_and_a_second_server_is_refused() -> None:
    first = listening_socket("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = listening_socket("127.0.0.1", port)  # a second worker's socket on the same port
    try:
        assert second.getsockname()[1] == port
        with pytest.raises(ValueError, match="Address already in use"):
            _check_port_free("127.0.0.1", port)  # another velocast serve on that port
    finally:
        first.close()
        second.close()
