"""A read-only or full VELOCAST_HOME, and the audit database down: one clear line, never a traceback or a 500.

The file systems are real. Tests often run as root, where ``chmod`` does not stop a write, so a
read-only home is a read-only bind mount of it and a full home a tiny tmpfs filled to the last
byte, both in a private mount namespace (``unshare -m``: the rest of the machine sees nothing).
Without mount namespaces, a non-root run uses ``chmod``; root without them is skipped. A full
disk is also produced in-process at the OS boundary (``os.fsync`` failing with ENOSPC) to check
the API's 507 on any machine.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import ENV_NAMES, HEADERS, KEY, settings_for
from tests.conftest import OPENDATA_SAMPLE, ROOT
from tests.processes import Process, free_port, http_up, wait_for

RECORD = {"counter_id": "100047547-104047547", "timestamp": "2021-08-02T08:00:00+02:00"}


def _namespaces() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, check=False)
    return probe.returncode == 0


NAMESPACES = _namespaces()


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    return {**env, "VELOCAST_HOME": str(home), "PYTHONPATH": str(ROOT / "src"), **extra}


def _read_only(home: Path, command: list[str]) -> list[str]:
    """``command`` seeing ``home`` read-only."""
    if NAMESPACES:
        script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
        return ["unshare", "-m", "sh", "-c", script, "sh", str(home), *command]
    if os.geteuid() == 0:
        pytest.skip("running as root without mount namespaces: no way to make a directory read-only")
    for path in [home, *home.rglob("*")]:
        if path.is_dir():
            path.chmod(0o555)
    return command


def _full(home: Path, full: Path, command: list[str]) -> list[str]:
    """``command`` with ``full`` a copy of ``home`` on a tmpfs without a free byte."""
    if not NAMESPACES:
        pytest.skip("no mount namespaces for a small tmpfs (the in-process ENOSPC test still runs)")
    size = sum(p.stat().st_size for p in home.rglob("*") if p.is_file()) + 4 * 1024 * 1024
    full.mkdir()
    script = ('mount -t tmpfs -o size="$2" tmpfs "$1" && cp -a "$3/." "$1/" && '
              '(dd if=/dev/zero of="$1/.filler" bs=4096 2>/dev/null || true) && shift 3 && exec "$@"')
    return ["unshare", "-m", "sh", "-c", script, "sh", str(full), str(size), str(home), *command]


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "velocast.cli", *args]


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def champion_home(real_store_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real-data home with a small baseline champion (forced: a test-mode model)."""
    home = tmp_path_factory.mktemp("storage") / "home"
    shutil.copytree(real_store_template, home)
    env = _env(home)
    for args in (["train", "--model-type", "baseline", "--model-test"],
                 ["promote", "--model-type", "baseline", "--version", "1", "--force", "--reason", "storage tests"]):
        done = _run(_cli(args), env)
        assert done.returncode == 0, done.stderr[-3000:]
    return home


@pytest.fixture
def home_copy(champion_home: Path, tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    shutil.copytree(champion_home, home)
    yield home
    for path in [home, *home.rglob("*")]:  # undo a chmod fallback so pytest can clean up
        if path.is_dir():
            path.chmod(0o755)


def _one_line(done: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """The one ``error:`` line a failed command ends with (after its progress lines, if any)."""
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert done.returncode == code, (done.returncode, done.stderr[-3000:])
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in done.stderr, done.stderr[-3000:]
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def test_a_read_only_home_gives_one_line_naming_the_path(home_copy: Path, real_subset_file: Path) -> None:
    env = _env(home_copy)
    line = _one_line(_run(_read_only(home_copy, _cli(["data", "ingest", str(real_subset_file)])), env), 5,
                     str(home_copy / "locks" / "store.lock"), "the count store's lock")
    assert "read-only file system" in line or "permission denied" in line.lower()
    _one_line(_run(_read_only(home_copy, _cli(["promote", "--model-type", "baseline", "--version", "1", "--force",
                                               "--reason", "x"])), env), 5, "the promotion lock and journal")
    _one_line(_run(_read_only(home_copy, _cli(["rollback", "--model-type", "baseline"])), env), 5)
    # reads still work on a read-only home
    done = _run(_read_only(home_copy, _cli(["champion", "--model-type", "baseline", "--history"])), env)
    assert done.returncode == 0 and "models:/bike-traffic-baseline/1" in done.stdout, done.stderr[-2000:]
    assert _run(_read_only(home_copy, _cli(["audit", "list"])), env).returncode == 0
    # -v: the traceback too
    verbose = _run(_read_only(home_copy, _cli(["-v", "data", "ingest", str(real_subset_file)])), env)
    assert verbose.returncode == 5 and "Traceback" in verbose.stderr and "error: cannot write" in verbose.stderr


def test_a_full_home_gives_one_line_naming_the_path(home_copy: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"  # the open-data sample holds counts the store lacks: the ingest must write
    done = _run(_full(home_copy, full, _cli(["data", "ingest", str(OPENDATA_SAMPLE)])), _env(full))
    _one_line(done, 5, "no space left on the device", f"VELOCAST_HOME={full}")


def test_user_errors_of_every_kind_are_one_line(home_copy: Path, tmp_path: Path) -> None:
    env = _env(home_copy)
    cases = [
        (["predict", "--input", str(tmp_path / "missing.csv"), "--output", str(tmp_path / "out.csv")], 2, "not found"),
        (["evaluate", "--model-type", "baseline", "--version", "99"], 2, "has no version 99"),
        (["promote", "--model-type", "baseline", "--version", "1"], 2, "test-mode model"),
        (["rollback", "--model-type", "baseline"], 2, "no previous champion"),
    ]
    for args, code, words in cases:
        _one_line(_run(_cli(args), env), code, words)
    # an unknown model type is refused by the option's choice list (Click's usage error, exit 2)
    unknown = _run(_cli(["train", "--model-type", "xgb"]), env)
    assert unknown.returncode == 2 and "'xgb' is not one of" in unknown.stderr and "Traceback" not in unknown.stderr
    # the same for a dependency that does not answer: exit 4, naming it
    dead = _env(home_copy, MLFLOW_TRACKING_URI="http://127.0.0.1:9", VELOCAST_DEPENDENCY_TIMEOUT_SECONDS="2")
    started = time.monotonic()
    _one_line(_run(_cli(["champion", "--model-type", "baseline"]), dead), 4, "mlflow unreachable: ")
    assert time.monotonic() - started < 60


def test_the_api_on_a_read_only_home_serves_and_refuses_writes_with_503(home_copy: Path, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = _env(home_copy, VELOCAST_API_KEY=KEY, VELOCAST_API_DEFAULT_MODEL_TYPE="baseline")
    api = Process(_read_only(home_copy, _cli(["serve", "--host", "127.0.0.1", "--port", str(port)])), env,
                  tmp_path / "api.log")
    try:
        wait_for(lambda: api.proc.poll() is None and http_up(f"{base}/health"), 120, "velocast serve", api.log)
        with httpx.Client(base_url=base, timeout=60) as http:
            wait_for(lambda: http.get("/ready").status_code == 200, 60, "/ready", api.log)
            assert http.post("/predict", json={"records": [RECORD], "model_type": "baseline"}).status_code == 200
            assert http.get("/models").status_code == 200 and http.get("/audit").status_code == 200
            for path, body in (("/rollback", {"model_type": "baseline"}),
                               ("/promote_champion", {"model_type": "baseline", "version": "1", "force": True,
                                                      "reason": "x"})):
                response = http.post(path, json=body, headers=HEADERS)
                assert response.status_code == 503, response.text
                assert response.json()["detail"].startswith("cannot write the promotion lock and journal (")
                assert str(home_copy) in response.json()["detail"]
    finally:
        api.kill()


def test_a_full_disk_is_507_and_the_audit_database_down_is_503(champion_home: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    shutil.copytree(champion_home, home)
    done = _run(_cli(["train", "--model-type", "baseline", "--model-test"]), _env(home))  # version 2, to promote
    assert done.returncode == 0, done.stderr[-3000:]
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:  # the OS boundary: the kernel refuses the data, like a full device does
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    from velocast.api import create_app

    with TestClient(create_app(settings_for(home, KEY))) as client:
        monkeypatch.setattr(os, "fsync", full_disk)
        response = client.post("/promote_champion", headers=HEADERS,
                               json={"model_type": "baseline", "version": "2", "force": True, "reason": "x"})
        monkeypatch.setattr(os, "fsync", real_fsync)
        assert response.status_code == 507, response.text
        detail = response.json()["detail"]
        assert detail.startswith("cannot write the promotion lock and journal (") and "no space left" in detail
        assert client.get("/models").json()["models"]["baseline"]["champion"]["version"] == "1"  # unchanged

    # the audit database refuses connections: /audit answers 503 naming it, in bounded time
    pytest.importorskip("psycopg2")
    settings = settings_for(home, KEY).model_copy(update={"audit_url": "postgresql://velocast@127.0.0.1:9/audit"})
    with TestClient(create_app(settings)) as client:
        started = time.monotonic()
        response = client.get("/audit")
        assert response.status_code == 503 and time.monotonic() - started < 30
        assert response.json()["detail"].startswith("audit database unreachable: "), response.text
