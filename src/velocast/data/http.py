"""The one HTTP GET of velocast's data sources: timeouts, retries with back-off, one clear error.

``fetch`` downloads a URL into memory or, streamed, into a file. It retries what a retry can
cure — HTTP 429, 500, 502, 503 and 504, refused or dropped connections, timeouts, a body cut
before its announced length — waiting ``backoff × 2^n`` seconds between attempts, or exactly what
the server's ``Retry-After`` asks (seconds or an HTTP date) on a 429 or 503. Any other 4xx is not
retried: 404 is told apart as ``not_found``. When every attempt failed it raises ``FetchError``
whose message is ONE line naming the URL (passwords and keys redacted) and the last status or
cause. A failed download leaves no file behind.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import httpx

from velocast.config import Settings, redact, redact_secrets

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_STATUSES = frozenset({429, 503})
_CHUNK = 1 << 16
USER_AGENT = "velocast (hourly bike-count forecasting)"


@dataclass(frozen=True)
class RetryPolicy:
    """How long one attempt may take and how failed attempts are repeated."""

    timeout: float = 10.0  # seconds, per connect and per read (not for the whole body)
    retries: int = 3  # attempts after the first one
    backoff: float = 1.0  # first wait; doubled at each retry
    backoff_max: float = 60.0
    retry_after_max: float = 120.0  # a longer Retry-After fails at once instead of waiting

    @classmethod
    def from_settings(cls, settings: Settings, timeout: float) -> RetryPolicy:
        return cls(timeout=timeout, retries=settings.http_retries, backoff=settings.http_backoff_seconds,
                   retry_after_max=settings.http_retry_after_max_seconds)

    def wait(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (0 for the first retry)."""
        return min(self.backoff * (2 ** retry), self.backoff_max)


class FetchError(RuntimeError):
    """Every attempt failed; ``str()`` is one line naming the URL and the last status or cause.

    ``kind``: ``not_found`` (404), ``http_error`` (another refused status), ``unreachable``
    (connection refused, DNS, timeout, cut connection) or ``retry_after_too_long``.
    """

    def __init__(self, message: str, *, url: str, kind: str, status: int | None = None, attempts: int = 0):
        super().__init__(message)
        self.url, self.kind, self.status, self.attempts = url, kind, status, attempts


@dataclass
class Fetched:
    """A successful GET: the body (``content``) or where it was written (``path``)."""

    url: str  # redacted
    status: int
    headers: Mapping[str, str]
    bytes: int
    attempts: int
    seconds: float
    content: bytes | None = None
    path: Path | None = None

    def json(self) -> Any:
        import json

        return json.loads(self.content or b"")


Progress = Callable[[int, int | None], None]  # (bytes received, total bytes or None)


def full_url(url: str, params: Mapping[str, Any] | None = None) -> str:
    """``url`` with ``params`` merged into its query, as it is sent."""
    return str(httpx.URL(url).copy_merge_params(dict(params))) if params else str(httpx.URL(url))


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds asked by a ``Retry-After`` header (delay in seconds or an HTTP date), None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def fetch(url: str, params: Mapping[str, Any] | None = None, *, policy: RetryPolicy, what: str = "GET",
          dest: Path | None = None, progress: Progress | None = None, headers: Mapping[str, str] | None = None,
          settings: Settings | None = None, sleep: Callable[[float], None] = time.sleep) -> Fetched:
    """GET ``url`` (``params`` merged into its query) with ``policy``'s timeouts and retries.

    With ``dest`` the body is streamed into that file (replaced only once the body is complete);
    otherwise it is returned in ``Fetched.content``. ``what`` names the fetch in messages
    ("weather forecast", "open-data export"). Raises ``FetchError`` (one line) when it fails.
    """
    try:
        target = full_url(url, params)
    except (httpx.InvalidURL, ValueError) as exc:
        raise FetchError(f"{what}: {redact(url)!r} is not a URL: {exc}", url=str(redact(url)), kind="http_error") from exc
    shown = unquote_plus(redact(target) or target)  # readable in a message: where=date >= date'…'
    headers = {"User-Agent": USER_AGENT, **(headers or {})}
    started = time.monotonic()
    attempts = policy.retries + 1
    last_status: int | None = None
    last_cause = ""
    for attempt in range(1, attempts + 1):
        wait: float | None = None
        try:
            with httpx.Client(timeout=policy.timeout, follow_redirects=True, headers=headers) as client, \
                    client.stream("GET", target) as response:
                last_status = response.status_code
                if response.status_code in RETRY_STATUSES:
                    last_cause = f"HTTP {response.status_code} {response.reason_phrase}".strip()
                    if response.status_code in RETRY_AFTER_STATUSES:
                        wait = retry_after_seconds(response.headers.get("Retry-After"))
                        if wait is not None and wait > policy.retry_after_max:
                            raise FetchError(
                                f"{what}: GET {shown} failed: {last_cause} asks to retry after {wait:.0f} s, "
                                f"more than the {policy.retry_after_max:.0f} s velocast waits",
                                url=shown, kind="retry_after_too_long", status=last_status, attempts=attempt)
                elif response.status_code >= 400:
                    body = response.read()[:300].decode("utf-8", "replace")
                    detail = " ".join(body.split())
                    kind = "not_found" if response.status_code == 404 else "http_error"
                    raise FetchError(
                        f"{what}: GET {shown} failed: HTTP {response.status_code} {response.reason_phrase}"
                        + (f": {detail}" if detail else ""),
                        url=shown, kind=kind, status=response.status_code, attempts=attempt)
                else:
                    fetched = _receive(response, dest, progress)
                    fetched.url, fetched.attempts = shown, attempt
                    fetched.seconds = round(time.monotonic() - started, 3)
                    return fetched
        except FetchError as exc:
            exc.args = (redact_secrets(str(exc), settings),)
            raise
        except (httpx.TransportError, _Incomplete) as exc:
            last_status = None
            last_cause = _cause(exc)
        if attempt < attempts:
            delay = policy.wait(attempt - 1) if wait is None else wait
            log.info("%s: GET %s: %s (attempt %d/%d); retrying in %.1f s", what, shown, last_cause, attempt,
                     attempts, delay)
            sleep(delay)
    message = f"{what}: GET {shown} failed after {attempts} attempt{'s' if attempts > 1 else ''}: {last_cause}"
    raise FetchError(redact_secrets(message, settings), url=shown, kind="unreachable" if not last_status else "http_error",
                     status=last_status, attempts=attempts)


class _Incomplete(Exception):
    """The body ended before the length the server announced."""


def _cause(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not text.startswith(type(exc).__name__) else text


def _receive(response: httpx.Response, dest: Path | None, progress: Progress | None) -> Fetched:
    expected = response.headers.get("Content-Length")
    total = int(expected) if expected and expected.isdigit() else None

    def pump(write: Callable[[bytes], Any]) -> None:
        for chunk in response.iter_bytes(_CHUNK):
            write(chunk)
            if progress:
                progress(response.num_bytes_downloaded, total)
        _check_length(response, total)

    if dest is None:
        chunks: list[bytes] = []
        pump(chunks.append)
        content = b"".join(chunks)
        return Fetched("", response.status_code, dict(response.headers), len(content), 0, 0.0, content=content)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.part")
    try:
        with open(partial, "wb") as handle:
            pump(handle.write)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    return Fetched("", response.status_code, dict(response.headers), dest.stat().st_size, 0, 0.0, path=dest)


def _check_length(response: httpx.Response, total: int | None) -> None:
    """h11 already refuses a body cut before Content-Length; this keeps the rule explicit."""
    if total is not None and response.num_bytes_downloaded < total:
        raise _Incomplete(f"body cut after {response.num_bytes_downloaded:,} of {total:,} bytes")


__all__ = ["RETRY_STATUSES", "FetchError", "Fetched", "RetryPolicy", "fetch", "full_url", "retry_after_seconds"]
