"""`velocast ui` served for real and rendered by a headless Chromium: every page shows its content.

Streamlit draws pages client-side over a websocket, so a one-shot ``--dump-dom`` with a virtual time
budget races the server's first script run (virtual time runs ahead while the socket is open):
it passed and failed by turns on a loaded machine. The test drives Chromium through its DevTools
protocol instead — navigate, poll the page's text until it shows, then take the DOM and a
screenshot — with the same headless flags.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from velocast.config import Settings
from velocast.data import store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,2000", "--remote-debugging-port=0"]
# the page's visible text, plus the values shown in input boxes (a select box shows its choice in one)
VISIBLE_TEXT = ("document.body.innerText + ' ' + "
                "Array.from(document.querySelectorAll('input')).map(i => i.value).join(' ')")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen, timeout: float = 20) -> None:
    """Stop a process started in its own session, and everything it started."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


class Browser:
    """One headless Chromium tab, driven through the DevTools protocol."""

    def __init__(self, profile: Path):
        from websockets.sync.client import connect

        self.process = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert self.process.poll() is None and time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        tabs = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in tabs if t["type"] == "page")
        self.socket = connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, open_timeout=10)
        self.calls = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.calls:
                assert "error" not in message, message["error"]
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def render(self, url: str, expected: list[str], timeout: float = 60) -> str:
        """Open ``url`` and wait until every expected text shows (or the time is up); the text shown."""
        self.call("Page.navigate", url=url)
        return self.render_wait(expected, timeout)

    def render_wait(self, expected: list[str], timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.evaluate(VISIBLE_TEXT) or ""
            if all(e in text for e in expected):
                time.sleep(1.0)  # let the charts and the map draw before the screenshot
                return self.evaluate(VISIBLE_TEXT) or text
            time.sleep(0.5)
        return text

    def save(self, screenshot: Path, dom: Path) -> None:
        screenshot.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        dom.write_text(self.evaluate("document.documentElement.outerHTML"), encoding="utf-8")

    def close(self) -> None:
        self.socket.close()
        _stop(self.process, timeout=10)


@pytest.fixture
def ui_server(at_ui_home: dict[str, Any], tmp_path: Path) -> Any:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "VELOCAST_API_URL"}
    env["VELOCAST_HOME"] = str(at_ui_home["home"])
    log_file = (tmp_path / "ui.log").open("w")
    velocast = Path(sys.executable).parent / "velocast"
    process = subprocess.Popen([str(velocast), "ui", "--port", str(port)], env=env, stdout=log_file,
                               stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/_stcore/health", timeout=2).text == "ok":
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (tmp_path / "ui.log").read_text()
            assert time.monotonic() < deadline, "the UI did not answer within 60 s"
            time.sleep(0.3)
        yield base
    finally:
        _stop(process)  # velocast ui and the streamlit server it started
        log_file.close()


def test_every_page_renders_in_chromium(ui_server: str, at_ui_home: dict[str, Any], tmp_path: Path) -> None:
    first_counter = str(store.counters(Settings(home=at_ui_home["home"])).sort_values("counter_name")
                        ["counter_name"].iloc[0])
    pages = {
        "predict": ("/", ["Predict", "Pick a counter on the map", first_counter, "Batch", "Monitoring"]),
        "batch": ("/batch", ["Batch predictions", "Counts file (CSV or parquet)"]),
        "models": ("/models", ["Champions", "lgbm champion: v2", "Metrics over versions", "Promotion history"]),
        "monitoring": ("/monitoring", ["Monitoring", "Latest verdict", "Champion health", "Audit log"]),
    }
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    browser = Browser(profile)
    try:
        for name, (path, expected) in pages.items():
            text = browser.render(ui_server + path, expected)
            browser.save(tmp_path / f"{name}.png", tmp_path / f"{name}.html")
            missing = [e for e in expected if e not in text]
            assert not missing, f"{path}: {missing} not in the rendered page: {text[:1500]}"
            assert "Traceback" not in text, f"{path}: an exception is shown: {text[:1500]}"
            assert (tmp_path / f"{name}.png").stat().st_size > 10_000, f"{path}: empty screenshot"
        # a click on Predict, in the real browser, brings the forecast of the day
        browser.render(ui_server + "/", pages["predict"][1])
        browser.evaluate("Array.from(document.querySelectorAll('button'))"
                         ".find(b => b.innerText.trim() === 'Predict').click()")
        text = browser.render_wait(["Predicted bikes at 08:00", "lgbm v2 (champion)", "80% interval:",
                                    "The band is the 80% prediction interval"])
        browser.save(tmp_path / "predicted.png", tmp_path / "predicted.html")
        assert "Predicted bikes at 08:00" in text and "lgbm v2 (champion)" in text, text[:1500]
        # the day's curve with its interval drawn as a band: a Vega chart of the area between lower and upper
        assert "80% interval:" in text and "The band is the 80% prediction interval" in text, text[:1500]
        charts = browser.evaluate("document.querySelectorAll('.vega-embed canvas, .vega-embed svg').length")
        assert charts and charts >= 1, "no chart drawn"
    finally:
        browser.close()
