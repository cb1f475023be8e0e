"""Training through Airflow: trigger the training DAG and read its run's state (Airflow 3 REST API v2).

- ``POST {VELOCAST_AIRFLOW_URL}/api/v2/dags/{dag_id}/dagRuns`` with ``{"dag_run_id", "logical_date":
  null, "conf"}`` starts a run (a run id that already exists is read back instead: a retried
  trigger starts nothing twice); ``GET .../dagRuns/{dag_run_id}`` reads its ``state``
  (``queued``, ``running``, ``success``, ``failed``).
- Authentication: a static token (``VELOCAST_AIRFLOW_TOKEN``) or a JWT from ``POST /auth/token``
  with ``VELOCAST_AIRFLOW_USERNAME`` / ``VELOCAST_AIRFLOW_PASSWORD``, kept until shortly before it
  expires and fetched again once on a 401.
- Every call has the timeout ``VELOCAST_AIRFLOW_TIMEOUT_SECONDS``. Every failure is an
  :class:`AirflowError` naming Airflow, its URL (without password) and what it answered.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from velocast.config import Settings, redact, redact_secrets

# Airflow's DagRunState -> the state of a velocast training job
JOB_STATES = {"queued": "queued", "running": "running", "success": "succeeded", "failed": "failed"}


class AirflowError(RuntimeError):
    """Airflow could not be reached, refused the call or answered something unexpected."""


@dataclass(frozen=True)
class DagRun:
    dag_id: str
    dag_run_id: str
    state: str

    @property
    def job_state(self) -> str | None:
        return JOB_STATES.get(self.state)


def _jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (not verified: only to know when to fetch a new one)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


class AirflowClient:
    def __init__(self, settings: Settings):
        if not settings.airflow_url:
            raise ValueError("VELOCAST_AIRFLOW_URL is not set")
        self.settings = settings
        self.base = settings.airflow_url.rstrip("/")
        self.timeout = settings.airflow_timeout_seconds
        self._token: str | None = settings.airflow_token or None
        self._expires: float | None = None
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return f"Airflow at {redact(self.base)}"

    # ----- authentication
    def _fetch_token(self) -> str:
        s = self.settings
        if not (s.airflow_username and s.airflow_password):
            raise AirflowError(f"{self.where}: set VELOCAST_AIRFLOW_TOKEN, or VELOCAST_AIRFLOW_USERNAME and "
                               "VELOCAST_AIRFLOW_PASSWORD, to call its API")
        response = self._send("POST", "/auth/token", json={"username": s.airflow_username,
                                                            "password": s.airflow_password}, auth=False)
        if response.status_code >= 400:
            raise AirflowError(f"{self.where} refused the token of VELOCAST_AIRFLOW_USERNAME {s.airflow_username!r} "
                               f"({response.status_code}): {redact_secrets(self._detail(response), s)}")
        try:
            token = response.json()["access_token"]
        except (ValueError, KeyError, TypeError) as exc:
            raise AirflowError(f"{self.where}: POST /auth/token answered no access_token") from exc
        self._expires = _jwt_expiry(token)
        return token

    def _auth_header(self, renew: bool = False) -> dict[str, str]:
        with self._lock:
            static = bool(self.settings.airflow_token)
            expiring = self._expires is not None and time.time() > self._expires - 60
            if not static and (renew or self._token is None or expiring):
                self._token = self._fetch_token()
            return {"Authorization": f"Bearer {self._token}"}

    # ----- HTTP
    def _send(self, method: str, path: str, json: Any = None, auth: bool = True) -> httpx.Response:
        for attempt in (1, 2):
            headers = self._auth_header(renew=attempt == 2) if auth else {}
            try:
                response = httpx.request(method, self.base + path, json=json, headers=headers, timeout=self.timeout)
            except httpx.HTTPError as exc:
                message = redact_secrets(str(exc), self.settings)
                raise AirflowError(f"{self.where} is unreachable ({method} {path}: {type(exc).__name__}: "
                                   f"{message or 'no answer'} within {self.timeout:g} s)") from exc
            if response.status_code == 401 and auth and attempt == 1 and not self.settings.airflow_token:
                continue  # the JWT expired early or Airflow restarted with another secret: fetch one more
            return response
        return response

    @staticmethod
    def _detail(response: httpx.Response) -> str:
        try:
            detail = response.json().get("detail")
        except (ValueError, AttributeError):
            detail = None
        return str(detail if detail is not None else response.text[:300])

    def _run(self, response: httpx.Response, dag_id: str) -> DagRun:
        try:
            body = response.json()
            return DagRun(dag_id, str(body["dag_run_id"]), str(body["state"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise AirflowError(f"{self.where} answered a DAG run without dag_run_id/state: "
                               f"{response.text[:300]}") from exc

    # ----- DAG runs
    def trigger(self, dag_id: str, dag_run_id: str, conf: dict[str, Any]) -> DagRun:
        path = f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns"
        response = self._send("POST", path, json={"dag_run_id": dag_run_id, "logical_date": None, "conf": conf})
        if response.status_code == 409:  # this run id exists already: a retried trigger
            return self.get_run(dag_id, dag_run_id)
        if response.status_code >= 400:
            raise AirflowError(f"{self.where} refused to start DAG {dag_id!r} ({response.status_code}): "
                               f"{redact_secrets(self._detail(response), self.settings)}")
        return self._run(response, dag_id)

    def get_run(self, dag_id: str, dag_run_id: str) -> DagRun:
        path = f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(dag_run_id, safe='')}"
        response = self._send("GET", path)
        if response.status_code >= 400:
            raise AirflowError(f"{self.where} answered {response.status_code} for DAG run {dag_run_id!r} of "
                               f"{dag_id!r}: {redact_secrets(self._detail(response), self.settings)}")
        return self._run(response, dag_id)


__all__ = ["JOB_STATES", "AirflowClient", "AirflowError", "DagRun"]
