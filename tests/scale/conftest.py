"""The team stack, for real, on loopback: PostgreSQL, an S3-compatible store, an MLflow server.

Session fixtures start, once for the package:

- ``pg``: a throwaway PostgreSQL cluster (Debian's ``initdb``/``pg_ctl``, run as the ``postgres``
  user when the tests run as root) in a temporary folder, listening on 127.0.0.1 on a free port,
  ``trust`` authentication, with the databases ``mlflow``, ``velocast_audit``, ``optuna`` and
  ``airflow``; stopped and removed at the end;
- ``s3``: moto's S3 server (``python -m moto.server``) on 127.0.0.1 with the bucket ``velocast``;
- ``mlflow_server``: ``mlflow server --backend-store-uri postgresql+psycopg2://…/mlflow
  --default-artifact-root s3://velocast/mlartifacts --no-serve-artifacts`` in a subprocess.

Why direct S3 artifacts (``--default-artifact-root s3://…``) rather than the proxy
(``--serve-artifacts --artifacts-destination s3://…``): summary.json promises a ``model_uri``
that loads *without* a tracking server. With direct artifacts that URI is ``s3://…``, readable
by anyone holding the S3 credentials; through the proxy it would be ``mlflow-artifacts:/…``,
readable only through the server. The price: clients need the S3 credentials and endpoint
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``MLFLOW_S3_ENDPOINT_URL``) — which they need
anyway for summary.json on ``s3://``.

``stack_env`` then points velocast at it by environment variables only (what a user sets).
Without PostgreSQL's server binaries the package is skipped (``.ci/run`` installs them).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "velocast"
DATABASES = ("mlflow", "velocast_audit", "optuna", "airflow")
AWS_ENV = {"AWS_ACCESS_KEY_ID": "velocast-test", "AWS_SECRET_ACCESS_KEY": "velocast-test-secret",
           "AWS_DEFAULT_REGION": "us-east-1"}
# client-side MLflow settings: a dead server fails a call in seconds instead of minutes of retries
MLFLOW_CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                     "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
# variables of the developer's shell that would send the stack elsewhere
FOREIGN_ENV = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE",
               "AWS_SHARED_CREDENTIALS_FILE", "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "PGPASSWORD",
               "PGSERVICE", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE")


def require_modules(*names: str) -> None:
    """Skip unless the modules are installed (looked up, not imported: moto runs in its own process)."""
    missing = [m for m in names if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the scale-out tests need {', '.join(missing)}: pip install -e '.[dev]'")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(check, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s\n{tail}")


def _stop_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Stop a process started with ``start_new_session`` and everything it started."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# --------------------------------------------------------------------------- PostgreSQL
def postgres_bindir() -> Path | None:
    """Where ``initdb``/``pg_ctl`` live: ``pg_config --bindir``, else the newest /usr/lib/postgresql/*/bin."""
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                           key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit()
                                           else 0, reverse=True)]
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).parent)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


class PostgresCluster:
    """A throwaway cluster: ``trust`` auth, loopback only, fsync off (test data only)."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="velocast-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root: the cluster belongs to `postgres`
            import pwd

            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no `postgres` user to own the test cluster")
            runuser = shutil.which("runuser")
            if runuser is None:
                pytest.skip("running as root without `runuser` to start PostgreSQL as `postgres`")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self.as_user = [runuser, "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 120) -> None:
        out = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=timeout, check=False,
                             cwd=self.root)
        if out.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({out.returncode}): {out.stdout[-2000:]}"
                               f"{out.stderr[-2000:]}\n{log}")

    def start(self) -> PostgresCluster:
        if not self.data.exists():
            self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--locale=C", "--no-sync")
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log),
                  "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        self.stop("immediate")  # the data is thrown away: no checkpoint to wait for
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                               connect_timeout=5)
        con.autocommit = True
        try:
            with con.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            con.close()
        return name


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresCluster]:
    require_modules("psycopg2")
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's `postgresql` "
                    "(.ci/run does when /usr/lib/postgresql/*/bin/initdb is missing)")
    cluster = PostgresCluster(bindir)
    try:
        cluster.start()
        for name in DATABASES:
            cluster.create_database(name)
        yield cluster
    finally:
        cluster.remove()


# --------------------------------------------------------------------------- S3 (moto)
class S3Server:
    def __init__(self, root: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = root / "moto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> S3Server:
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV} | AWS_ENV
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _wait(lambda: _http_ok(f"{self.endpoint}/moto-api/"), 60, "moto server", self.log)
        self.client().create_bucket(Bucket=BUCKET)
        return self

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
                            region_name=AWS_ENV["AWS_DEFAULT_REGION"])

    def keys(self, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return [o["Key"] for page in paginator.paginate(Bucket=BUCKET, Prefix=prefix) for o in page.get("Contents", [])]

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc, timeout=5)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # loopback only
            return response.status < 500
    except OSError:  # refused, reset, timed out, HTTP error
        return False


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    require_modules("boto3", "s3fs", "moto", "flask")
    server = S3Server(tmp_path_factory.mktemp("moto"))
    try:
        yield server.start()
    finally:
        server.stop()


# --------------------------------------------------------------------------- MLflow server
class MlflowServer:
    """``mlflow server`` on a PostgreSQL database, artifacts written by clients straight to S3."""

    def __init__(self, backend_uri: str, artifact_root: str, s3_endpoint: str, root: Path):
        self.backend_uri, self.artifact_root, self.s3_endpoint = backend_uri, artifact_root, s3_endpoint
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / f"mlflow-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def command(self) -> list[str]:
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_uri,
                   "--default-artifact-root", self.artifact_root, "--no-serve-artifacts",
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        if importlib.util.find_spec("prometheus_flask_exporter") is not None:  # /metrics, as deploy/ runs it
            command.append(f"--expose-prometheus={self.log.parent / f'prometheus-{self.port}'}")
        return command

    def start(self) -> MlflowServer:
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV and not k.startswith("VELOCAST_")}
        env |= AWS_ENV | {"MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
                          # the GenAI job runner (huey consumers) is not used by velocast
                          "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.log.parent,
                                         start_new_session=True)
        _wait(lambda: self.proc.poll() is None and _http_ok(f"{self.url}/health"), 120, "mlflow server", self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc)
        _wait(lambda: not _http_ok(f"{self.url}/health"), 20, "mlflow server shutdown")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture(scope="session")
def mlflow_servers(pg: PostgresCluster, s3: S3Server, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[callable]:
    """Start an MLflow server on its own new database (``name``); all are stopped at the end."""
    root = tmp_path_factory.mktemp("mlflow-servers")
    started: list[MlflowServer] = []

    def start(database: str, create: bool = True) -> MlflowServer:
        if create:
            pg.create_database(database)
        server = MlflowServer(pg.url(database), f"s3://{BUCKET}/mlartifacts/{database}", s3.endpoint, root)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            if server.running:
                _stop_group(server.proc, timeout=5)


@pytest.fixture(scope="session")
def mlflow_server(mlflow_servers) -> MlflowServer:
    """The shared team server, on the database ``mlflow``."""
    return mlflow_servers("mlflow", create=False)


# --------------------------------------------------------------------------- velocast pointed at the stack
def stack_variables(pg: PostgresCluster, s3: S3Server, server: MlflowServer, summary_key: str) -> dict[str, str]:
    """Everything a user sets to run velocast on the stack (besides VELOCAST_HOME)."""
    return {
        "MLFLOW_TRACKING_URI": server.url,
        "MLFLOW_S3_ENDPOINT_URL": s3.endpoint,
        **AWS_ENV,
        **MLFLOW_CLIENT_ENV,
        "VELOCAST_SUMMARY_URI": f"s3://{BUCKET}/{summary_key}",
        "VELOCAST_AUDIT_URL": pg.url("velocast_audit"),
    }


def apply_env(monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]) -> None:
    for name in FOREIGN_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def stack_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, real_home: Path,
              pg: PostgresCluster, s3: S3Server, mlflow_server: MlflowServer) -> dict[str, str]:
    """velocast on the shared stack, by configuration only; summary.json under a key of this test."""
    import mlflow

    variables = stack_variables(pg, s3, mlflow_server, f"models/{request.node.name}/summary.json")
    apply_env(monkeypatch, variables)
    # the test's own MLflow calls go to the stack too: an earlier test of this worker process that ran
    # velocast in-process left MLflow's process-wide tracking URI on its own home (it wins over the variable)
    mlflow.set_tracking_uri(variables["MLFLOW_TRACKING_URI"])
    return variables
