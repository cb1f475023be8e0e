"""Servers the tests start for real on 127.0.0.1 (``mlflow server``, ``velocast serve``) and stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> float:
    """Seconds until ``check()`` held; an AssertionError (with the log's tail) past ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    raise AssertionError(f"{what} not within {timeout:.0f}s\n{tail}")


def http_up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.TransportError:
        return False


class Process:
    """A subprocess in its own session (its output in ``log``), stopped group-wide at the end."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path):
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate_within(self, seconds: float) -> float:
        """SIGTERM, then the seconds it took to exit; an AssertionError if it did not within ``seconds``."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running {seconds:.0f}s after SIGTERM\n"
                                 f"{self.log.read_text(errors='replace')[-4000:]}") from None
        return time.monotonic() - started
