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
        self.events: list[dict[str, Any]] = []  # what the page reported meanwhile (network requests...)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.calls:
                assert "error" not in message, message["error"]
                return message["result"]
            if "method" in message:
                self.events.append(message)

    def click(self, x: float, y: float) -> None:
        """A real left click at page coordinates (CSS pixels)."""
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        time.sleep(0.3)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

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
        answer = ["Predicted bikes at 08:00", "lgbm v2 (champion)", "80% interval:",
                  "The band is the 80% prediction interval"]
        for _ in range(3):  # a click that lands while Streamlit re-renders the form is lost: click again
            browser.evaluate("Array.from(document.querySelectorAll('button'))"
                             ".find(b => b.innerText.trim() === 'Predict').click()")
            text = browser.render_wait(answer, timeout=40)
            if all(e in text for e in answer):
                break
        browser.save(tmp_path / "predicted.png", tmp_path / "predicted.html")
        assert "Predicted bikes at 08:00" in text and "lgbm v2 (champion)" in text, text[:1500]
        # the day's curve with its interval drawn as a band: a Vega chart of the area between lower and upper
        assert "80% interval:" in text and "The band is the 80% prediction interval" in text, text[:1500]
        charts = browser.evaluate("document.querySelectorAll('.vega-embed canvas, .vega-embed svg').length")
        assert charts and charts >= 1, "no chart drawn"
    finally:
        browser.close()


def _pixel(lat: float, lon: float, view: Any) -> tuple[float, float]:
    """Web Mercator pixel offset of (lat, lon) from the centre of a deck.gl view (512-pixel world tiles)."""
    import math

    scale = 512 * 2 ** view.zoom

    def project(la: float, lo: float) -> tuple[float, float]:
        y = math.log(math.tan(math.pi / 4 + math.radians(la) / 2))
        return scale * (lo + 180) / 360, scale * (1 - y / math.pi) / 2

    x, y = project(lat, lon)
    cx, cy = project(view.latitude, view.longitude)
    return x - cx, y - cy


def test_the_predict_map_picks_a_counter_without_the_internet(ui_server: str, at_ui_home: dict[str, Any],
                                                            tmp_path: Path) -> None:
    """No map tile, no request off this machine: a click on a counter's dot picks that counter."""
    from urllib.parse import urlparse

    import numpy as np

    from velocast.ui.counter_map import MAP_HEIGHT, MAP_WIDTH, counter_area, fit_view

    counters = store.counters(Settings(home=at_ui_home["home"])).sort_values("counter_name").reset_index(drop=True)
    first = str(counters["counter_name"].iloc[0])
    view = fit_view(counter_area(counters["latitude"].to_numpy(float), counters["longitude"].to_numpy(float)),
                    MAP_WIDTH, MAP_HEIGHT)
    places = counters.groupby(["latitude", "longitude"])["counter_name"].apply(list).reset_index()
    places = places[~places["counter_name"].map(lambda names: first in names)]
    coords = places[["latitude", "longitude"]].to_numpy(float)
    distance = np.sqrt(((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1)) + np.eye(len(coords)) * 9
    target = places.iloc[int(distance.min(axis=1).argmax())]  # the most isolated place: one dot under the click

    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    browser = Browser(profile)
    try:
        browser.call("Network.enable")
        browser.render(ui_server + "/", ["Pick a counter on the map", first, "No map tiles (works offline)"])
        box = None
        deadline = time.monotonic() + 60
        while box is None and time.monotonic() < deadline:
            box = browser.evaluate("(() => { const c = document.querySelector("
                                   "'[data-testid=\"stDeckGlJsonChart\"] canvas'); if (!c) return null; "
                                   "const r = c.getBoundingClientRect(); return r.width > 0 ? "
                                   "[r.left, r.top, r.width, r.height] : null; })()")
            time.sleep(0.5)
        assert box, "the map's canvas is not drawn"
        left, top, width, height = box
        time.sleep(3)  # the layers are drawn
        dx, dy = _pixel(float(target["latitude"]), float(target["longitude"]), view)
        x, y = left + width / 2 + dx, top + height / 2 + dy
        assert left < x < left + width and top < y < top + height, (x, y, box)
        browser.save(tmp_path / "map_before.png", tmp_path / "map_before.html")
        chosen = "document.querySelector('input[aria-label=\"Counter\"]').value"
        assert browser.evaluate(chosen) == first
        browser.click(x, y)
        deadline = time.monotonic() + 60
        while browser.evaluate(chosen) not in target["counter_name"] and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(1.0)
        browser.save(tmp_path / "map_after.png", tmp_path / "map_after.html")
        assert browser.evaluate(chosen) in target["counter_name"], \
            f"clicking {target['counter_name']} at {(x, y)} did not pick it: {browser.evaluate(chosen)!r} is chosen"
        requested = {e["params"]["request"]["url"] for e in browser.events if e["method"] == "Network.requestWillBeSent"}
        outside = sorted(u for u in requested if urlparse(u).hostname not in (None, "127.0.0.1", "localhost"))
        assert requested and not outside, f"the page asked the internet for: {outside[:5]}"
    finally:
        browser.close()


def test_the_api_docs_render_without_the_internet(tmp_path: Path) -> None:
    """`/docs` (Swagger UI) and `/redoc` load their scripts from the API itself, not from a CDN: on a
    machine without internet access the interactive documentation still shows every route."""
    port = _free_port()
    env = {**os.environ, "VELOCAST_HOME": str(tmp_path / "home")}
    log_path = tmp_path / "api.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen([str(Path(sys.executable).parent / "velocast"), "serve", "--host", "127.0.0.1",
                                    "--port", str(port)], env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    browser = None
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.3)
        html = httpx.get(f"{base}/docs", timeout=10).text
        assert f"{base}" not in html and "cdn." not in html and "/docs-static/swagger-ui-bundle.js" in html
        browser = Browser(tmp_path / "profile")
        browser.call("Network.enable")
        text = browser.render(f"{base}/docs", ["/predict", "/champion_health", "velocast API"])
        assert "/predict" in text and "/champion_health" in text, text[:2000]
        requested = {e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"}
        assert requested and all(url.startswith(base) or url.startswith("data:") for url in requested), requested
        text = browser.render(f"{base}/redoc", ["/predict", "velocast API"])
        assert "/predict" in text, text[:2000]
    finally:
        if browser is not None:
            browser.close()
        _stop(process)
