"""The Docker Compose stack of deploy/, checked without a Docker engine.

No engine runs where the suite runs, so the files are checked structurally: services, health
checks, dependency conditions, variables and secrets, ports, the settings every velocast process
gets, and that each command, option and setting named in the compose file exists in velocast,
MLflow and Airflow. Compose's variable interpolation is re-implemented (the documented rules for
``$$``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``,
``${VAR:+alt}``, ``${VAR+alt}``) to prove that a missing secret stops compose. When the
``docker compose`` plugin exists, ``docker compose config`` runs too; when ``COMPOSE_SPEC_SCHEMA``
names a copy of the compose-spec JSON schema, the file is validated against it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = DEPLOY / "Dockerfile"

# what deploy/README.md documents: service -> published container ports
PUBLISHED = {"minio": {9000, 9001}, "mlflow": {5000}, "api": {8000}, "ui": {8501}, "airflow-apiserver": {8080},
             "prometheus": {9090}, "alertmanager": {9093}, "grafana": {3000}}
ONE_SHOT = {"minio-init", "airflow-init"}
VELOCAST_CLIENTS = {"api", "ui", "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer"}
AIRFLOW_COMMANDS = {"airflow-apiserver": "api-server", "airflow-scheduler": "scheduler",
                    "airflow-dag-processor": "dag-processor", "airflow-triggerer": "triggerer"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY$|API_KEY")


# ------------------------------------------------------------------ compose interpolation
_TOKEN = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.DOTALL)


class MissingVariable(ValueError):
    pass


def interpolate(value: str, env: dict[str, str]) -> str:
    """One string, interpolated the way compose does it."""

    def replace(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        parsed = _BRACED.fullmatch(match["braced"])
        if not parsed:
            raise ValueError(f"invalid interpolation ${{{match['braced']}}}")
        name, op, arg = parsed["name"], parsed["op"], parsed["arg"]
        current = env.get(name)
        if op is None:
            return current or ""
        if op in (":-", "-"):
            return (current if current else arg) if op == ":-" else (arg if current is None else current)
        if op in (":?", "?"):
            if (op == ":?" and not current) or current is None:
                raise MissingVariable(f"required variable {name} is missing a value: {arg}")
            return current
        return (arg if current else "") if op == ":+" else ("" if current is None else arg)

    return _TOKEN.sub(replace, value)


def interpolated(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: interpolated(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolated(value, env) for value in node]
    return interpolate(node, env) if isinstance(node, str) else node


def variables(text: str) -> list[tuple[str, str | None, str]]:
    """(name, operator, argument) of every interpolation in ``text`` (whole-line comments left out)."""
    found = []
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for match in _TOKEN.finditer(text):
        if match["named"]:
            found.append((match["named"], None, ""))
        elif match["braced"] is not None:
            parsed = _BRACED.fullmatch(match["braced"])
            assert parsed, f"invalid interpolation ${{{match['braced']}}}"
            found.append((parsed["name"], parsed["op"], parsed["arg"] or ""))
    return found


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            env[key.strip()] = value.strip()
    return env


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def required() -> set[str]:
    return {name for name, op, _ in variables(COMPOSE.read_text()) if op in (":?", "?")}


@pytest.fixture(scope="module")
def filled(example: dict[str, str], required: set[str]) -> dict[str, str]:
    """.env.example with every required value filled in, as a user would."""
    return {**example, **{name: f"{name.lower()}-0123456789abcdef" for name in required}}


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any], filled: dict[str, str]) -> dict[str, Any]:
    return interpolated(raw, filled)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def container_port(mapping: str) -> int:
    return int(str(mapping).rsplit(":", 1)[-1].split("/")[0])


def is_one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart") in ("no", False)


# ------------------------------------------------------------------ services and dependencies
def test_every_service_has_an_image_or_a_build(services: dict[str, Any]) -> None:
    assert set(PUBLISHED) | ONE_SHOT | VELOCAST_CLIENTS | {"postgres"} <= set(services)
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"{name}: no image and no build"
        if "image" in service:
            assert ":" in service["image"], f"{name}: image without a tag"


def test_long_running_services_have_health_checks_and_one_shots_do_not_restart(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if name in ONE_SHOT:
            assert is_one_shot(service), f"{name}: a one-shot job must not restart"
            continue
        assert not is_one_shot(service), f"{name}: long-running but restart: no"
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name}: no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: health check test must be CMD or CMD-SHELL"
        for key in ("interval", "timeout", "retries"):
            assert key in check, f"{name}: health check without {key}"


def test_depends_on_uses_conditions_on_existing_services(services: dict[str, Any]) -> None:
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must be a mapping with conditions"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert target != name
            condition = spec.get("condition")
            if target in ONE_SHOT:
                assert condition == "service_completed_successfully", f"{name} -> {target}: {condition}"
            else:
                assert condition == "service_healthy", f"{name} -> {target}: {condition}"
                assert services[target].get("healthcheck"), f"{name} waits for {target}, which has no health check"


def test_dependencies_have_no_cycle(services: dict[str, Any]) -> None:
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        assert state.get(name) != "active", f"dependency cycle: {' -> '.join([*path, name])}"
        state[name] = "active"
        for target in services[name].get("depends_on", {}):
            visit(target, [*path, name])
        state[name] = "done"

    for name in services:
        visit(name, [])


def test_everything_waits_for_what_it_uses(services: dict[str, Any]) -> None:
    def needs(name: str) -> set[str]:  # transitive dependencies
        seen: set[str] = set()
        todo = list(services[name].get("depends_on", {}))
        while todo:
            target = todo.pop()
            if target not in seen:
                seen.add(target)
                todo += list(services[target].get("depends_on", {}))
        return seen

    assert {"postgres", "minio-init"} <= needs("mlflow")
    for name in VELOCAST_CLIENTS - {"airflow-init"}:
        assert {"postgres", "mlflow", "minio-init"} <= needs(name), name
    for name in AIRFLOW_COMMANDS:
        assert "airflow-init" in needs(name), name
    assert "api" in needs("ui")
    assert "minio" in needs("minio-init") and "postgres" in needs("airflow-init")


def test_named_volumes_and_bind_mounts_exist(raw: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(raw.get("volumes") or {})
    used = set()
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount["source"]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared, f"declared but unused volumes: {declared - used}"
    assert {"postgres-data", "minio-data", "velocast-home"} <= declared


# ------------------------------------------------------------------ variables and secrets
def test_every_variable_is_documented_in_env_example(example: dict[str, str]) -> None:
    used = {name for name, _, _ in variables(COMPOSE.read_text())}
    assert not used - set(example), f"not in .env.example: {sorted(used - set(example))}"
    assert not set(example) - used, f"documented but unused: {sorted(set(example) - used)}"
    text = ENV_EXAMPLE.read_text()
    for name in example:  # each variable has a comment saying what it is
        block = text.split(f"\n{name}=")[0].rstrip().splitlines()
        assert block and block[-1].startswith("#") or any(
            line.startswith("#") for line in block[-4:]), f"{name} has no comment"


def test_no_bare_dollar_variables() -> None:
    for name, op, _ in variables(COMPOSE.read_text()):
        assert op is not None or name == "", f"${name}: use ${{{name}:?...}} or ${{{name}:-default}}"
    # the $$ of the container-side shell survive YAML and compose as one $
    assert "$${POSTGRES_USER}" in COMPOSE.read_text()


def test_secrets_are_required_everywhere_and_empty_in_the_example(example: dict[str, str], required: set[str]) -> None:
    found = variables(COMPOSE.read_text())
    secrets = {name for name, _, _ in found if SECRET_NAME.search(name)}
    assert {"POSTGRES_PASSWORD", "MLFLOW_DB_PASSWORD", "VELOCAST_DB_PASSWORD", "AIRFLOW_DB_PASSWORD",
            "MINIO_ROOT_PASSWORD", "S3_SECRET_KEY", "VELOCAST_API_KEY", "AIRFLOW_FERNET_KEY",
            "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "AIRFLOW_ADMIN_PASSWORD"} <= secrets
    assert secrets <= required
    for name, op, message in found:
        if name in required:
            assert op == ":?", f"${{{name}}} must be ${{{name}:?message}} at every use"
            assert name in message and "deploy/.env" in message, f"${{{name}:?...}}: say what to set where"
        else:
            assert op == ":-", f"${{{name}}}: optional settings need a default"
            assert example[name] == message, f"{name}: .env.example says {example[name]!r}, compose {message!r}"
    for name in required:
        assert example[name] == "", f".env.example must leave {name} empty"


def test_compose_refuses_to_run_with_a_missing_secret(raw: dict[str, Any], example: dict[str, str],
                                                      filled: dict[str, str], required: set[str]) -> None:
    with pytest.raises(MissingVariable, match="required variable"):
        interpolated(raw, example)  # .env.example copied but not edited
    for name in sorted(required):
        for env in ({k: v for k, v in filled.items() if k != name}, {**filled, name: ""}):
            with pytest.raises(MissingVariable, match=f"required variable {name} is missing"):
                interpolated(raw, env)
    interpolated(raw, filled)  # complete: fine


def test_no_literal_secret_in_the_files(raw: dict[str, Any]) -> None:
    # NAME: value / NAME=value, NAME a whole word (not the name inside a ${...}), value not a $-reference
    literal = re.compile(r"(?i)(?<![\w{])[\w.]*(password|passwd|secret|token|api_key)[\w.]*\s*[:=]\s*['\"]?"
                         r"(?![$'\"\s]|$)(\S+)")
    url_secret = re.compile(r"[a-z][a-z0-9+.-]*://[^:/@\s]+:(?P<secret>[^@\s]+)@")
    for path in (COMPOSE, DOCKERFILE, ENV_EXAMPLE):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            hit = literal.search(line)
            assert not hit or hit.group(2).startswith("/"), f"{path.name}:{number}: literal secret? {line.strip()}"
            for match in url_secret.finditer(line):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", match["secret"]), \
                    f"{path.name}:{number}: password inside a URL must be ${{VAR:?...}}"
    for name, service in raw["services"].items():
        for key, value in env_of(service).items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", value), f"{name}: {key} is not from deploy/.env"
    script = (DEPLOY / "postgres" / "init-databases.sh").read_text()
    assert re.findall(r"create_database (\w+) \"\$\{(\w+):-\}\"", script) == [
        ("mlflow", "MLFLOW_DB_PASSWORD"), ("velocast", "VELOCAST_DB_PASSWORD"), ("airflow", "AIRFLOW_DB_PASSWORD")]
    assert ":'password'" in script  # quoted by psql, never pasted into SQL


def test_env_file_is_ignored_by_git_and_docker() -> None:
    assert "deploy/.env" in (ROOT / ".gitignore").read_text().splitlines()
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert "**/.env" in ignore and ".venv" in ignore


# ------------------------------------------------------------------ ports and URLs
def test_ports_are_published_as_documented(services: dict[str, Any], filled: dict[str, str]) -> None:
    readme = (DEPLOY / "README.md").read_text()
    for name, service in services.items():
        ports = service.get("ports", [])
        assert {container_port(p) for p in ports} == PUBLISHED.get(name, set()), f"{name}: ports {ports}"
        for mapping in ports:
            host, host_port, inside = str(mapping).split(":")
            assert host == filled["BIND_ADDRESS"] == "127.0.0.1" and host_port == inside, mapping
            assert f"http://localhost:{host_port}" in readme, f"deploy/README.md does not give port {host_port}"
    assert "cp deploy/.env.example deploy/.env" in readme and "--env-file deploy/.env up -d" in readme


def test_health_checks_probe_the_ports_the_services_listen_on(services: dict[str, Any]) -> None:
    listens = {"mlflow": 5000, "api": 8000, "ui": 8501, "airflow-apiserver": 8080, "airflow-scheduler": 8974,
               "prometheus": 9090, "alertmanager": 9093, "grafana": 3000}
    for name, port in listens.items():
        test = " ".join(services[name]["healthcheck"]["test"])
        assert f"http://localhost:{port}/" in test, f"{name}: {test}"
        args = command_of(services[name])
        if name == "grafana":
            assert env_of(services[name])["GF_SERVER_HTTP_PORT"] == str(port)
        else:
            assert name == "airflow-scheduler" or str(port) in " ".join(args), f"{name} does not listen on {port}"
    assert env_of(services["airflow-scheduler"])["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"
    assert "/health" in " ".join(services["api"]["healthcheck"]["test"])
    assert "/_stcore/health" in " ".join(services["ui"]["healthcheck"]["test"])
    assert "-h 127.0.0.1" in services["postgres"]["healthcheck"]["test"][1]  # TCP: after the init scripts


# ------------------------------------------------------------------ what each process is told
def _bucket_names(services: dict[str, Any]) -> set[str]:
    script = "\n".join(command_of(services["minio-init"]))
    line = next(line for line in script.splitlines() if "mc mb" in line)
    return {word.split("/", 1)[1] for word in line.split() if word.startswith("local/")}


def _databases() -> set[str]:
    return set(re.findall(r"create_database (\w+) ", (DEPLOY / "postgres" / "init-databases.sh").read_text()))


def test_velocast_processes_get_the_team_stack_settings(services: dict[str, Any]) -> None:
    buckets = _bucket_names(services)
    assert buckets == {"mlflow", "velocast"}
    for name in VELOCAST_CLIENTS:
        env = env_of(services[name])
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        audit = urlsplit(env["VELOCAST_AUDIT_URL"])
        assert audit.scheme.startswith("postgresql") and audit.hostname == "postgres", name
        assert audit.path.strip("/") in _databases() and audit.username == audit.path.strip("/"), name
        summary = urlsplit(env["VELOCAST_SUMMARY_URI"])
        assert summary.scheme == "s3" and summary.netloc in buckets and summary.path.endswith(".json"), name
        assert env["MLFLOW_S3_ENDPOINT_URL"] == env["AWS_ENDPOINT_URL"] == "http://minio:9000", name
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"], name
        assert env["VELOCAST_HOME"] == "/var/lib/velocast", name
    # one shared home (the store, and the lock files that serialise summary.json writes)
    for name in VELOCAST_CLIENTS - {"airflow-init"}:
        assert "velocast-home:/var/lib/velocast" in services[name]["volumes"], name
    assert env_of(services["api"])["VELOCAST_API_KEY"]
    assert "VELOCAST_API_KEY" not in env_of(services["ui"])
    assert env_of(services["ui"])["VELOCAST_API_URL"] == "http://api:8000"


def test_dask_cluster_serves_the_dags_trainings(services: dict[str, Any]) -> None:
    """A scheduler and 2 workers with the velocast environment and home; Airflow's tasks train on it."""
    scheduler, worker = services["dask-scheduler"], services["dask-worker"]
    args = command_of(scheduler)
    assert args[:2] == ["dask", "scheduler"] and args[args.index("--port") + 1] == "8786"
    assert args[args.index("--dashboard-address") + 1] == ":8787"
    assert "http://localhost:8787/health" in " ".join(scheduler["healthcheck"]["test"])
    args = command_of(worker)
    assert args[:3] == ["dask", "worker", "tcp://dask-scheduler:8786"]
    assert args[args.index("--dashboard-address") + 1] == ":8789"
    assert "http://localhost:8789/health" in " ".join(worker["healthcheck"]["test"])
    assert worker["deploy"]["replicas"] == 2
    assert worker["depends_on"]["dask-scheduler"]["condition"] == "service_healthy"
    # workers read the store and the weather as the client does: same environment, same home
    assert env_of(worker) == {k: v for k, v in env_of(services["api"]).items()
                              if k in env_of(services["ui"]) and not k.startswith(("VELOCAST_API", "VELOCAST_AIRFLOW"))}
    assert "velocast-home:/var/lib/velocast" in worker["volumes"]
    for name in AIRFLOW_COMMANDS:
        assert env_of(services[name])["VELOCAST_DASK_SCHEDULER"] == "tcp://dask-scheduler:8786", name
    assert services["airflow-scheduler"]["depends_on"]["dask-scheduler"]["condition"] == "service_healthy"
    from distributed.cli.dask_scheduler import main as scheduler_cli
    from distributed.cli.dask_worker import main as worker_cli

    for cli, args in ((scheduler_cli, command_of(scheduler)), (worker_cli, command_of(worker))):
        options = {opt for param in cli.params for opt in param.opts}
        assert {a for a in args if a.startswith("--")} <= options, args


def test_mlflow_server_uses_postgresql_and_minio(services: dict[str, Any]) -> None:
    mlflow = services["mlflow"]
    env, args = env_of(mlflow), command_of(mlflow)
    store = urlsplit(env["MLFLOW_BACKEND_STORE_URI"])
    assert store.scheme.startswith("postgresql") and store.hostname == "postgres" and store.path == "/mlflow"
    assert "mlflow" in _databases()
    root = next(a.split("=", 1)[1] for a in args if a.startswith("--default-artifact-root="))
    assert urlsplit(root).scheme == "s3" and urlsplit(root).netloc in _bucket_names(services)
    assert "--no-serve-artifacts" in args and "--host=0.0.0.0" in args
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "mlflow:5000" in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")


def test_every_velocast_setting_named_exists(services: dict[str, Any]) -> None:
    from velocast.config import Settings

    known = {f"VELOCAST_{name.upper()}" for name in Settings.model_fields}
    for name in VELOCAST_CLIENTS:
        for key in env_of(services[name]):
            if key.startswith("VELOCAST_"):
                assert key in known, f"{name}: {key} is not a velocast setting"


def test_velocast_commands_and_options_exist(services: dict[str, Any]) -> None:
    import typer

    from velocast.cli import app

    group = typer.main.get_command(app)
    for name in ("api", "ui"):
        args = command_of(services[name])
        assert args[0] == "velocast"
        command = group.commands[args[1]]
        options = {opt for param in command.params if param.param_type_name == "option" for opt in param.opts}
        for arg in args[2:]:
            if arg.startswith("--"):
                assert arg in options, f"{name}: velocast {args[1]} has no {arg}"
        assert args[args.index("--host") + 1] == "0.0.0.0", f"{name} must listen on every interface"


def test_mlflow_server_options_exist(services: dict[str, Any]) -> None:
    pytest.importorskip("mlflow")
    from mlflow.cli import cli
    from mlflow.environment_variables import MLFLOW_SERVER_ALLOWED_HOSTS

    server = cli.commands["server"]
    options = {opt for param in server.params for opt in (*param.opts, *param.secondary_opts)}
    args = command_of(services["mlflow"])
    assert args[:2] == ["mlflow", "server"]
    for arg in args[2:]:
        assert arg.split("=", 1)[0] in options, f"mlflow server has no {arg}"
    envvars = {param.envvar for param in server.params if param.envvar}
    assert "MLFLOW_BACKEND_STORE_URI" in envvars
    assert MLFLOW_SERVER_ALLOWED_HOSTS.name in env_of(services["mlflow"])


# ------------------------------------------------------------------ Airflow
def test_airflow_components_and_configuration(services: dict[str, Any]) -> None:
    envs = {name: env_of(services[name]) for name in [*AIRFLOW_COMMANDS, "airflow-init"]}
    for name, subcommand in AIRFLOW_COMMANDS.items():
        assert command_of(services[name])[:2] == ["airflow", subcommand], name
        assert "../dags:/opt/airflow/dags:ro" in services[name]["volumes"], name
        assert "airflow-logs:/opt/airflow/logs" in services[name]["volumes"], name
    shared = ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__FERNET_KEY",
              "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL")
    for key in shared:  # one value for every component, or tokens and encrypted values do not match
        assert len({env[key] for env in envs.values()}) == 1, key
    env = envs["airflow-scheduler"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    conn = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert conn.scheme.startswith("postgresql") and conn.hostname == "postgres" and conn.path == "/airflow"
    execution = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert execution.hostname == "airflow-apiserver" and execution.port == 8080 and execution.path == "/execution/"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/airflow/dags"
    assert {p.name for p in (DEPLOY / "../dags").resolve().glob("*.py")} >= {
        "monitor_and_fine_tune.py", "daily_ingest.py", "daily_predict.py", "quarterly_retrain.py"}
    # the admin password comes from deploy/.env into the file the simple auth manager reads
    password_file = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert password_file in "\n".join(command_of(services["airflow-init"]))
    assert "airflow-auth:/opt/airflow/auth" in services["airflow-apiserver"]["volumes"]
    assert "airflow db migrate" in "\n".join(command_of(services["airflow-init"]))


def test_airflow_settings_named_exist(services: dict[str, Any]) -> None:
    """Every AIRFLOW__SECTION__KEY is an option of the installed Airflow (typos are silently ignored)."""
    import importlib.util

    spec = importlib.util.find_spec("airflow")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("apache-airflow is not installed")
    config = yaml.safe_load((Path(spec.submodule_search_locations[0]) / "config_templates" / "config.yml").read_text())
    for name in [*AIRFLOW_COMMANDS, "airflow-init"]:
        for key in env_of(services[name]):
            if key.startswith("AIRFLOW__"):
                section, option = key[len("AIRFLOW__"):].lower().split("__", 1)
                assert option in (config.get(section) or {}).get("options", {}), f"{key} is not an Airflow option"


# ------------------------------------------------------------------ the image
def test_dockerfile_builds_velocast_without_cuda() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert 'pip install --constraint /tmp/constraints.txt ".[${EXTRAS}]"' in text
    assert '"asyncpg==' in text  # Airflow 3's async engine on PostgreSQL (postgresql+asyncpg)
    assert re.search(r"^ARG EXTRAS=s3,postgres,airflow,monitoring,scale$", text, re.MULTILINE)  # scale: Dask, Delta
    for line in text.splitlines():
        if "torch" in line and "pip install" in line:
            assert "torch==2.13.0" in line and "--index-url https://download.pytorch.org/whl/cpu" in line, line
    for source in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, re.MULTILINE):
        for part in source.split():
            assert (ROOT / part).exists(), f"COPY {part}: not in the build context"
    constraints = (DEPLOY / "constraints.txt").read_text()
    assert not re.search(r"^(torch|nvidia-)", constraints, re.MULTILINE)
    pyproject = (ROOT / "pyproject.toml").read_text()
    for pin in ("apache-airflow==3.3.2", "mlflow==3.17.2"):
        assert pin in pyproject and f"\n{pin}\n" in constraints, pin


# ------------------------------------------------------------------ real validators, when present
def test_docker_compose_config_when_the_plugin_exists(tmp_path: Path, filled: dict[str, str]) -> None:
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], check=False, capture_output=True).returncode != 0:
        pytest.skip("no `docker compose` plugin on this machine")
    good = tmp_path / "good.env"
    good.write_text("".join(f"{k}={v}\n" for k, v in filled.items()))
    done = subprocess.run([docker, "compose", "-f", str(COMPOSE), "--env-file", str(good), "config", "-q"],
                          check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([docker, "compose", "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config", "-q"],
                          check=False, capture_output=True, text=True)
    assert done.returncode != 0 and "deploy/.env" in done.stderr


def test_compose_spec_schema_when_a_copy_is_given(compose: dict[str, Any]) -> None:
    path = os.environ.get("COMPOSE_SPEC_SCHEMA")
    if not path:
        pytest.skip("set COMPOSE_SPEC_SCHEMA to a copy of compose-spec.json (none ships with installed packages)")
    import json

    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(Path(path).read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(compose)
