"""The monitoring files of deploy/, checked with the real tools and against the real /metrics.

- Prometheus: ``promtool check config``, ``promtool check rules`` and ``promtool test rules`` (the
  unit tests in ``alerts.test.yml``: every alert fires when it should and not otherwise).
- Alertmanager: ``amtool check-config``, and the real ``alertmanager`` started through
  ``start.sh`` delivering an alert to a webhook on 127.0.0.1 in the Slack format.
- Grafana (not installable here): the provisioning files checked structurally; every PromQL
  expression of the dashboards parsed by ``promtool``, and every metric name they (and the alert
  rules) use found in what the velocast API exports (the app started in-process on a home with a
  champion, a weekly cycle run, a prediction served); the ``mlflow_*`` names are checked against a
  real ``mlflow server --expose-prometheus`` in ``tests/scale/test_monitoring_stack.py``.

Tests needing ``promtool``/``amtool``/``alertmanager`` skip, naming the Debian package, when absent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import yaml

from tests.conftest import wait_for_http

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
ALERTMANAGER = DEPLOY / "alertmanager"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCE_UID = "velocast-prometheus"
ASKED_ALERTS = {"VelocastChampionHealthCritical", "VelocastDriftPersistent", "VelocastNoNewData", "VelocastNotReady",
                "VelocastApiDown", "VelocastPredictErrorRate", "VelocastPredictLatencyP99", "VelocastCycleError"}
# series Prometheus makes itself for every target
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (Debian package {package}; .ci/run installs it)")
    return found


def run(*args: str, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alert_rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


# ------------------------------------------------------------------ PromQL helpers
_GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1h", "$__range": "1d", "$model_type": "lgbm"}
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "inf", "nan", "atan2"}


def promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, as Prometheus would receive it."""
    for name, value in _GRAFANA_VARS.items():
        expr = expr.replace(name, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (label matchers, ranges, strings, functions removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', promql(expr))  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)  # label lists
    expr = re.sub(r"\boffset\s+\w+", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", expr):
        name, call = match.group(1), match.group(2)
        if not call and name not in _KEYWORDS and not re.fullmatch(r"\d+\w*", name):
            names.add(name)
    return names


def dashboard_expressions() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expression) of every target of every panel."""
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                out.append((path.name, panel["title"], target["expr"]))
    return out


def variable_metrics() -> set[str]:
    names = set()
    for path in DASHBOARDS:
        for variable in json.loads(path.read_text()).get("templating", {}).get("list", []):
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            found = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
            assert found, f"{path.name}: variable {variable['name']}: unexpected query {query!r}"
            names.add(found[1])
    return names


def test_metric_names_are_found_in_expressions() -> None:
    expr = ('histogram_quantile(0.99, sum by (le) (rate(velocast_http_request_duration_seconds_bucket'
            '{route="/predict",status=~"5.."}[$__rate_interval]))) / on (x) group_left max(up) > 48 * 3600 '
            'and time() - velocast_store_latest_count_timestamp_seconds offset 1h')
    assert metric_names(expr) == {"velocast_http_request_duration_seconds_bucket", "up",
                                  "velocast_store_latest_count_timestamp_seconds"}


# ------------------------------------------------------------------ Prometheus
def test_prometheus_config_is_valid_with_its_rule_file() -> None:
    promtool = tool("promtool", "prometheus")
    done = run(promtool, "check", "config", "prometheus.yml", cwd=PROMETHEUS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout + done.stderr
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert jobs["velocast-api"] == ["api:8000"] and jobs["mlflow"] == ["mlflow:5000"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_alert_rules_are_valid() -> None:
    promtool = tool("promtool", "prometheus")
    done = run(promtool, "check", "rules", "alerts.yml", cwd=PROMETHEUS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_alert_rules_pass_their_unit_tests() -> None:
    promtool = tool("promtool", "prometheus")
    done = run(promtool, "test", "rules", "alerts.test.yml", cwd=PROMETHEUS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())
    assert tests["rule_files"] == ["alerts.yml"]
    fires, silent = set(), set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
            for alert in check.get("exp_alerts") or []:
                rule = alert_rules()[check["alertname"]]
                assert alert["exp_labels"]["severity"] == rule["labels"]["severity"]
                assert set(alert["exp_annotations"]) == {"summary", "description"}
    assert fires == silent == set(alert_rules()), (set(alert_rules()) - fires, set(alert_rules()) - silent)


def test_alert_rules_have_for_severity_and_messages_with_values() -> None:
    rules = alert_rules()
    assert ASKED_ALERTS <= set(rules)
    for name, rule in rules.items():
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        summary, description = rule["annotations"]["summary"], rule["annotations"]["description"]
        assert summary and description, name
        assert "{{" in summary + description, f"{name}: the message carries no value or label"
    assert rules["VelocastDriftPersistent"]["expr"].strip().endswith(">= 3")
    assert "48 * 3600" in rules["VelocastNoNewData"]["expr"]


# ------------------------------------------------------------------ Alertmanager
def test_alertmanager_config_is_valid() -> None:
    amtool = tool("amtool", "prometheus-alertmanager")
    done = run(amtool, "check-config", str(ALERTMANAGER / "alertmanager.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load((ALERTMANAGER / "alertmanager.yml").read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    assert set(receivers) == {"velocast-webhook"}
    slack = receivers["velocast-webhook"]["slack_configs"][0]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["alertmanager"]
    assert slack["api_url_file"] == compose["environment"]["WEBHOOK_URL_FILE"]
    assert slack["api_url_file"].startswith("/alertmanager/") and "alertmanager-data:/alertmanager" in compose["volumes"]


def _start_script(tmp_path: Path, url: str, binary: str, *args: str, **more: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "VELOCAST_WEBHOOK_URL": url, "WEBHOOK_URL_FILE": str(tmp_path / "url"),
           "ALERTMANAGER_BIN": binary, **more}
    return run("sh", str(ALERTMANAGER / "start.sh"), *args, env=env)


@pytest.mark.parametrize(("given", "written"), [
    ("https://discord.com/api/webhooks/123/tok", "https://discord.com/api/webhooks/123/tok/slack"),
    ("https://discord.com/api/webhooks/123/tok/", "https://discord.com/api/webhooks/123/tok/slack"),
    ("https://discord.com/api/webhooks/123/tok?thread_id=9", "https://discord.com/api/webhooks/123/tok/slack?thread_id=9"),
    ("https://discord.com/api/webhooks/123/tok/slack", "https://discord.com/api/webhooks/123/tok/slack"),
    ("https://hooks.slack.com/services/T0/B0/xyz", "https://hooks.slack.com/services/T0/B0/xyz"),
    ("", ""),
])
def test_start_script_writes_a_slack_compatible_url(tmp_path: Path, given: str, written: str) -> None:
    done = _start_script(tmp_path, given, shutil.which("true") or "/bin/true")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "url").read_text() == written
    assert (tmp_path / "url").stat().st_mode & 0o077 == 0  # the URL is a secret: this user only
    assert ("VELOCAST_WEBHOOK_URL is empty" in done.stderr) == (given == "")


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append({"path": self.path, "json": json.loads(body)})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    _Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", _Hook.received
    finally:
        server.shutdown()
        server.server_close()


def test_alertmanager_sends_an_alert_to_the_velocast_webhook(tmp_path: Path, webhook: tuple[str, list]) -> None:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.skip("alertmanager is not installed (Debian package prometheus-alertmanager)")
    url, received = webhook
    config = (ALERTMANAGER / "alertmanager.yml").read_text()
    # the only two changes: where the URL file is, and no 30 s wait before the first message
    test_config = config.replace("/alertmanager/webhook_url", str(tmp_path / "url"))
    test_config = test_config.replace("group_wait: 30s", "group_wait: 1s")
    assert test_config.count(str(tmp_path)) == 1 and "group_wait: 1s" in test_config
    (tmp_path / "alertmanager.yml").write_text(test_config)
    port = free_port()
    env = {"PATH": os.environ["PATH"], "VELOCAST_WEBHOOK_URL": url, "WEBHOOK_URL_FILE": str(tmp_path / "url"),
           "ALERTMANAGER_BIN": binary}
    with open(tmp_path / "alertmanager.log", "wb") as log:
        process = subprocess.Popen(["sh", str(ALERTMANAGER / "start.sh"), f"--config.file={tmp_path / 'alertmanager.yml'}",
                                    f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                                    "--cluster.listen-address="], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/-/ready", process, tmp_path / "alertmanager.log", "alertmanager", timeout=30)
        rule = alert_rules()["VelocastCycleError"]
        alert = {"labels": {"alertname": "VelocastCycleError", "severity": "critical", "model_type": "lgbm"},
                 "annotations": {"summary": "The latest weekly cycle of lgbm failed",
                                 "description": "drift step failed: KeyError"}}
        assert rule["labels"]["severity"] == "critical"
        response = httpx.post(f"{base}/api/v2/alerts", json=[alert], timeout=5)
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + 30
        while not received:
            assert time.monotonic() < deadline, (tmp_path / "alertmanager.log").read_text()[-3000:]
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=30)
    message = received[0]
    assert message["path"] == "/hook"
    attachment = message["json"]["attachments"][0]
    assert message["json"]["username"] == "velocast alerts"
    assert attachment["title"] == "[FIRING:1] VelocastCycleError" and attachment["color"] == "danger"
    assert attachment["text"].startswith("(critical) The latest weekly cycle of lgbm failed: drift step failed: KeyError")


# ------------------------------------------------------------------ Grafana
def test_grafana_provisioning_matches_the_compose_file() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    grafana = compose["grafana"]
    mounts = dict(m.split(":")[:2] for m in grafana["volumes"] if m.startswith("./"))
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert sources["apiVersion"] == 1
    (source,) = sources["datasources"]
    assert (source["type"], source["uid"], source["access"]) == ("prometheus", DATASOURCE_UID, "proxy")
    prometheus_port = compose["prometheus"]["ports"][0].rsplit(":", 1)[-1]
    assert source["url"] == f"http://prometheus:{prometheus_port}" and source["isDefault"] is True
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "velocast.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and mounts["./grafana/dashboards"] == provider["options"]["path"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (GRAFANA / "dashboards" / Path(home).name).exists()


def test_dashboards_are_well_formed() -> None:
    assert {p.stem for p in DASHBOARDS} == {"velocast-serving", "velocast-model-quality", "velocast-drift",
                                            "velocast-decisions"}
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"] == path.stem and board["title"].startswith("velocast") and "velocast" in board["tags"]
        assert isinstance(board["schemaVersion"], int) and board["panels"]
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        cells: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, (path.name, panel["title"])
            mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
            assert not mine & cells, f"{path.name}: {panel['title']} overlaps another panel"
            cells |= mine
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, panel["title"]
            assert panel["description"], f"{path.name}: {panel['title']} says nothing about its metrics"
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(refs) == len(set(refs)), panel["title"]
            for target in panel["targets"]:
                assert target["expr"].strip() and target["datasource"]["uid"] == DATASOURCE_UID
        for variable in board.get("templating", {}).get("list", []):
            assert variable["datasource"]["uid"] == DATASOURCE_UID
            expressions = " ".join(t["expr"] for p in board["panels"] for t in p.get("targets", []))
            assert f"${variable['name']}" in expressions, f"{path.name}: variable {variable['name']} unused"


def test_dashboard_expressions_are_valid_promql(tmp_path: Path) -> None:
    promtool = tool("promtool", "prometheus")
    rules = [{"record": f"velocast:dashboard_check:{i}", "expr": promql(expr)}
             for i, (_, _, expr) in enumerate(dashboard_expressions())]
    (tmp_path / "dashboards.rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    done = run(promtool, "check", "rules", str(tmp_path / "dashboards.rules.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


# ------------------------------------------------------------------ metric names against the real exporters
@pytest.fixture(scope="module")
def exported(real_store_template: Path, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every series name of the API's /metrics on a home with a champion, a weekly cycle and a prediction."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.api.conftest import ENV_NAMES, client_for, isolated_home
    from velocast.lifecycle.decisions.promotion import promote
    from velocast.lifecycle.operations.cycle import monitor_and_fine_tune
    from velocast.lifecycle.training.train import train

    home = tmp_path_factory.mktemp("monitoring") / "home"
    shutil.copytree(real_store_template, home)
    saved = {name: os.environ.get(name) for name in (*ENV_NAMES, "VELOCAST_HOME")}
    try:
        with isolated_home(home) as settings:
            champion = train("lgbm", model_test=True, hyperparams={"n_estimators": 40}, settings=settings)
            promote("lgbm", version=champion.model_version, reason="champion (a test-mode model: forced)", force=True,
                    settings=settings)
            # a real cycle: test-mode cycles (smoke tests) count in no cycle alert, so export no cycle series
            cycle = monitor_and_fine_tune("lgbm", settings=settings)
            assert cycle.error is None and cycle.drift_detected is not None and cycle.health_state
        with client_for(home) as client:
            record = {"counter_id": "100056331-103056331", "timestamp": "2021-08-04T17:00:00+02:00"}
            assert client.post("/predict", json={"records": [record]}).status_code == 200
            text = client.get("/metrics").text
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


NEW_METRICS = {
    "velocast_ready", "velocast_champion_test_metric", "velocast_champion_health_state", "velocast_champion_health_rmse",
    "velocast_champion_health_r2", "velocast_champion_health_baseline_rmse", "velocast_champion_health_rmse_increase",
    "velocast_champion_health_rows", "velocast_champion_health_timestamp_seconds", "velocast_drift_status",
    "velocast_drift_report_timestamp_seconds", "velocast_drift_new_counters", "velocast_drift_feature_drifted",
    "velocast_drift_feature_tested", "velocast_drift_feature_statistic", "velocast_drift_feature_p_value",
    "velocast_drift_feature_effect", "velocast_drift_feature_effect_threshold", "velocast_drift_detected_streak",
    "velocast_store_latest_count_timestamp_seconds", "velocast_audit_events_total", "velocast_last_cycle_error",
    "velocast_last_cycle_timestamp_seconds", "velocast_metrics_source_failures_total",
    "velocast_metrics_source_last_success_timestamp_seconds",
}


def test_the_api_exports_every_new_metric(exported: set[str]) -> None:
    assert not NEW_METRICS - exported, sorted(NEW_METRICS - exported)


def test_dashboards_and_alerts_use_only_exported_metrics(exported: set[str]) -> None:
    used: dict[str, set[str]] = {}
    for name, title, expr in dashboard_expressions():
        for metric in metric_names(expr):
            used.setdefault(metric, set()).add(f"{name}: {title}")
    for alert, rule in alert_rules().items():
        for metric in metric_names(rule["expr"]):
            used.setdefault(metric, set()).add(f"alerts.yml: {alert}")
    for metric in variable_metrics():
        used.setdefault(metric, set()).add("a dashboard variable")
    velocast = {m for m in used if not m.startswith("mlflow_")}
    missing = {m: sorted(where) for m, where in used.items() if m in velocast and m not in exported | PROMETHEUS_SERIES}
    assert not missing, json.dumps(missing, indent=1)
    assert len(velocast) >= 30  # the check looked at something


def test_the_demo_points_at_the_monitoring_the_compose_file_publishes() -> None:
    from velocast.config import Settings
    from velocast.demo import MONITORING_FILES, MONITORING_URLS, where_to_look

    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    for name, url in MONITORING_URLS.items():
        port = url.rsplit(":", 1)[1]
        published = {str(p).rsplit(":", 1)[1] for p in services[name.lower()]["ports"]}
        assert port in published, f"{name}: {url} is not what compose publishes ({published})"
    for path in MONITORING_FILES:
        assert (ROOT / path).exists(), path
    lines = "\n".join(where_to_look(Settings()))
    assert all(url in lines for url in MONITORING_URLS.values()) and "deploy/grafana/" in lines
