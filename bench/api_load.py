"""API latency under load: uvicorn on 127.0.0.1 and a bounded load generator (loopback only).

16 concurrent clients call `GET /health` for a fixed duration (the HTTP floor: the same server,
load and machine doing no work), then send `/predict` requests (single-record, then 100-record
bodies), then single-record requests again while another process promotes a new champion
half-way (the API must hot-swap it with no failed request; the old champion serves until the new one's
trees are compiled, and the bench waits for every worker to serve it). ``/predict`` p99 divided by
``/health`` p99 is the verdict a slower or busier machine does not change.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ROOT, isolated, velocast_env

CLIENTS = 16
WORKERS = 2  # velocast serve --workers: one per core of the 2-core benchmark machine
API_KEY = "bench-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(home: str) -> list[dict[str, Any]]:
    """A home with the real data, an lgbm champion (v1) and a challenger (v2); sample records."""
    from bench.lifecycle import prepare_home

    prepare_home(home)
    os.environ["VELOCAST_HOME"] = home
    from velocast.data import store
    from velocast.lifecycle.training.train import train

    train("lgbm", hyperparams={"n_estimators": 120})
    rows = store.query_counts("2021-08-01", "2021-08-10").sample(2000, random_state=0)
    return [{"counter_id": r.counter_id, "timestamp": r.timestamp.isoformat(), "latitude": r.latitude,
             "longitude": r.longitude} for r in rows.itertuples()]


async def _load(url: str, bodies: list[bytes] | None, seconds: float, clients: int) -> dict[str, Any]:
    """``clients`` concurrent loops POSTing ``bodies`` in turn to ``url`` (GET when ``bodies`` is None)."""
    import httpx

    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        k = i
        while time.perf_counter() < stop:
            body = bodies[k % len(bodies)] if bodies else None
            k += clients
            started = time.perf_counter()
            try:
                response = await http.get(url) if body is None else \
                    await http.post(url, content=body, headers={"content-type": "application/json"})
                if response.status_code != 200:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            latencies.append((time.perf_counter() - started) * 1000)

    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        elapsed = time.perf_counter() - started
    lat = np.array(latencies)
    return {"requests": len(lat), "rps": len(lat) / elapsed, "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)), "p99_ms": float(np.percentile(lat, 99)), "errors": errors,
            "generator": "httpx"}


def load_phase(url: str, bodies: list[bytes] | None, seconds: float) -> dict[str, Any]:
    """One phase of ``CLIENTS`` closed-loop clients: ``wrk`` when installed, else httpx in this process."""
    if shutil.which("wrk"):
        return _wrk(url, bodies, seconds, CLIENTS)
    return asyncio.run(_load(url, bodies, seconds, CLIENTS))


# wrk: each connection sends the next body of the file in turn (GET without bodies); at the end, one
# JSON line of the figures (latencies in microseconds; errors: socket errors and non-2xx answers)
_WRK_SCRIPT = """
local bodies, i = {}, 0
function init(args)
  if args[1] then for line in io.lines(args[1]) do bodies[#bodies + 1] = line end end
  if #bodies > 0 then wrk.method = "POST"; wrk.headers["Content-Type"] = "application/json" end
end
function request()
  if #bodies == 0 then return wrk.format() end
  i = i + 1
  return wrk.format(nil, nil, nil, bodies[(i % #bodies) + 1])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('VELOCAST {"requests": %d, "seconds": %.6f, "p50_us": %d, "p95_us": %d, "p99_us": %d, '
    .. '"errors": %d}\\n', summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), e.connect + e.read + e.write + e.timeout + e.status))
end
"""


def _wrk(url: str, bodies: list[bytes] | None, seconds: float, clients: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="velocast-wrk-") as tmp:
        script, data = Path(tmp) / "load.lua", Path(tmp) / "bodies.jsonl"
        script.write_text(_WRK_SCRIPT)
        data.write_bytes(b"\n".join(bodies or []) + b"\n")
        command = ["wrk", "-t1", f"-c{clients}", f"-d{max(round(seconds), 1)}s", "--timeout", "30s",
                   "-s", str(script), url, *(["--", str(data)] if bodies else [])]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("VELOCAST "))
    got = json.loads(line.removeprefix("VELOCAST "))
    return {"requests": got["requests"], "rps": got["requests"] / got["seconds"], "p50_ms": got["p50_us"] / 1000,
            "p95_ms": got["p95_us"] / 1000, "p99_ms": got["p99_us"] / 1000, "errors": got["errors"],
            "generator": "wrk"}


WARM_UP_SECONDS = 15  # /predict load after /ready: first requests, lleaves compile of the champion, heap settle


def run(seconds: float = 60.0, workers: int = WORKERS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="velocast-bench-api-") as tmp:
        home = str(Path(tmp) / "home")
        records, prep_seconds, _ = isolated(prepare, home)
        print(f"  home ready in {prep_seconds:.0f}s", flush=True)
        port = _free_port()
        env = {**velocast_env(Path(home)), "VELOCAST_API_KEY": API_KEY, "VELOCAST_API_MODEL_REFRESH_SECONDS": "1"}
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as server_log:  # read only if something fails: a pipe nobody reads can block
            server = subprocess.Popen([str(ROOT / ".venv" / "bin" / "velocast"), "serve", "--host", "127.0.0.1",
                                       "--port", str(port), "--workers", str(workers)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=server_log)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base, log_path)
            url = f"{base}/predict"
            single = [json.dumps({"records": [r], "model_type": "lgbm"}).encode() for r in records]
            hundred = [json.dumps({"records": records[i:i + 100], "model_type": "lgbm"}).encode()
                       for i in range(0, len(records), 100)]
            load_phase(url, single, WARM_UP_SECONDS)
            compiled_after = _wait_compiled(Path(home))
            phases = []
            for name, target, bodies in (("/health (HTTP floor)", f"{base}/health", None), ("1 record", url, single),
                                         ("100 records", url, hundred)):
                result, _, _ = isolated(load_phase, target, bodies, seconds)
                phases.append({"name": name, **result})
                print(f"  {name}: {result}", flush=True)
            promotion: dict[str, Any] = {}

            def promote() -> None:
                started = promotion["started"] = time.perf_counter()
                done = subprocess.run([str(ROOT / ".venv" / "bin" / "velocast"), "promote", "--model-type", "lgbm",
                                       "--version", "2", "--reason", "benchmark: promotion under load"],
                                      env=env, capture_output=True, text=True)
                promotion.update(seconds=round(time.perf_counter() - started, 2), returncode=done.returncode,
                                 output=(done.stdout + done.stderr).strip()[-300:])

            promoter = threading.Timer(seconds / 2, promote)
            promoter.start()
            result, _, _ = isolated(load_phase, url, single, seconds)
            promoter.join()
            phases.append({"name": "1 record, promotion mid-run", **result})
            print(f"  promotion phase: {result}; promote command: {promotion}", flush=True)
            served, swapped = _served_versions(base, single[0]), None
            while served != ["2"] and time.perf_counter() - promotion["started"] < SWAP_WAIT_SECONDS:
                time.sleep(1)  # the workers swap once the new champion's trees are compiled
                served = _served_versions(base, single[0])
            if served == ["2"]:
                swapped = round(time.perf_counter() - promotion.pop("started"), 1)
        except BaseException:
            print(log_path.read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            server.terminate()
            server.wait(timeout=30)
    health = phases[0]["p99_ms"]
    return {"clients": CLIENTS, "workers": workers, "seconds_per_phase": seconds, "warm_up_seconds": WARM_UP_SECONDS,
            "compiled_after_seconds": compiled_after,
            "phases": phases, "promotion": {**{k: v for k, v in promotion.items() if k != "started"}, "served_after": served,
                                        "every_worker_swapped_after_seconds": swapped},
            "p99_ratio_to_health": {p["name"]: round(p["p99_ms"] / health, 2) for p in phases[1:]}}


COMPILE_WAIT_SECONDS = 600
SWAP_WAIT_SECONDS = 420  # VELOCAST_API_MODEL_COMPILE_WAIT_SECONDS (300) after the promotion, and a margin
BOOSTERS = 2  # an lgbm champion's with- and without-weather models


def _wait_compiled(home: Path) -> float | None:
    """Seconds until the champion's boosters are compiled with lleaves (None: lleaves not installed).

    A worker compiles its new model in a low-priority process while LightGBM serves; under the load
    of a phase that process gets little CPU and may finish minutes later, in the middle of a phase.
    The phases measure the steady state: the server, without load, finishes compiling first (and
    the workers load the compiled objects, a few seconds)."""
    from velocast.models.compiled import lleaves_available

    if not lleaves_available():
        return None
    folder = home / "cache" / "lleaves"
    started = time.perf_counter()
    while time.perf_counter() - started < COMPILE_WAIT_SECONDS:
        if len(list(folder.glob("*.so"))) >= BOOSTERS and not list(folder.glob("*.partial")):
            time.sleep(5)
            return round(time.perf_counter() - started, 1)
        time.sleep(1)
    print(f"  the champion was not compiled after {COMPILE_WAIT_SECONDS} s: LightGBM serves the phases", flush=True)
    return None


def _served_versions(base: str, body: bytes, calls: int = 32) -> list[str]:
    """The model versions ``/predict`` answers with after the promotion (several calls: every worker)."""
    import httpx

    with httpx.Client(timeout=10) as http:
        answers = [http.post(f"{base}/predict", content=body, headers={"content-type": "application/json"})
                   for _ in range(calls)]
    return sorted({a.json()["model"]["version"] for a in answers if a.status_code == 200})


def _wait_ready(base: str, log_path: Path, timeout: float = 120) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    sys.exit(f"the API at {base} did not become ready; its log ends with:\n{log_path.read_text()[-3000:]}")
