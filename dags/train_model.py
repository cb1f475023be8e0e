"""
### train_model — one training job of the API, run by Airflow

Triggered by `POST /train` when the API has `VELOCAST_AIRFLOW_URL` (never scheduled). The API
stores the job (request, posted rows) in the velocast database and starts a run of this DAG with
conf `{"job_id": "<id>"}`; the task calls `velocast.lifecycle.operations.jobs.run_job`, the same function the
API runs in-process: train, double-evaluate against the champion, audit (`training`), record the
result or the error in the job's row. It never promotes. `GET /jobs/{id}` on the API shows the
run's state and, when done, the result.

The workers need the API's `VELOCAST_AUDIT_URL` (the job rows), tracking and store settings.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task


@dag(
    dag_id="train_model",
    description="Run one training job posted to the velocast API (POST /train)",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="Europe/Paris"),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,  # it runs only when the API triggers it: no need to unpause it by hand
    default_args={"owner": "velocast", "retries": 0},
    tags=["velocast", "lifecycle", "api"],
    doc_md=__doc__,
    params={"job_id": Param("", type="string", description="Id of the training job stored by the API.")},
)
def train_model():
    @task
    def run_job(params=None):
        from velocast.lifecycle.operations.jobs import run_job as run

        return run(params["job_id"])

    run_job()


train_model()
