"""The shared fetch helper: Retry-After in both of its forms, and a Retry-After too long to wait."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.http_server import Reply, ScriptedServer
from velocast.data.http import FetchError, RetryPolicy, fetch, retry_after_seconds


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = datetime(2021, 9, 1, 8, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds("Wed, 01 Sep 2021 08:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Wed, 01 Sep 2021 07:59:00 GMT", now) == 0.0  # already past: no wait
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None, now) is None


def test_a_retry_after_longer_than_the_limit_fails_at_once_in_one_line() -> None:
    waits: list[float] = []
    with ScriptedServer(lambda request: Reply(503, b"maintenance", {"Retry-After": "3600"})) as server, \
            pytest.raises(FetchError) as caught:
        fetch(f"{server.url}/data", policy=RetryPolicy(timeout=2, retries=3, retry_after_max=60), what="test",
              sleep=waits.append)
    assert len(server.requests) == 1 and waits == []
    assert caught.value.kind == "retry_after_too_long" and "\n" not in str(caught.value)
    assert str(caught.value) == (f"test: GET {server.url}/data failed: HTTP 503 Service Unavailable asks to retry "
                                 "after 3600 s, more than the 60 s velocast waits")


def test_back_off_doubles_between_attempts_without_retry_after() -> None:
    waits: list[float] = []
    with ScriptedServer(lambda request: Reply(200, b"ok"), script=[Reply(502)] * 3) as server:
        fetched = fetch(f"{server.url}/data", policy=RetryPolicy(timeout=2, retries=3, backoff=0.5), sleep=waits.append)
    assert fetched.content == b"ok" and fetched.attempts == 4 and waits == [0.5, 1.0, 2.0]
