"""Run Airflow in a subprocess for the DAG tests: ``describe <dags>`` or ``test <dags> <dag_id> <conf>``.

The environment (AIRFLOW_HOME, AIRFLOW__CORE__DAGS_FOLDER, the metadata database, VELOCAST_HOME)
is set by the caller, so Airflow's configuration and logging never touch the pytest process.
The last line of the output is ``RESULT <json>``.
"""

from __future__ import annotations

import json
import sys
import time


def describe(folder: str) -> dict:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=folder)
    dags = {}
    for dag_id, dag in bag.dags.items():
        params = {name: {"value": dag.params[name], "schema": dag.params.get_param(name).schema}
                  for name in dag.params}
        dags[dag_id] = {
            "fileloc": dag.fileloc, "schedule": getattr(dag.timetable, "expression", None) or str(dag.timetable),
            "catchup": dag.catchup, "max_active_runs": dag.max_active_runs, "tags": sorted(dag.tags),
            "doc_md": dag.doc_md, "owner": dag.owner, "params": params,
            "task_ids": list(dag.task_ids),
            "tasks": {t.task_id: {"trigger_rule": str(t.trigger_rule.value if hasattr(t.trigger_rule, "value")
                                                      else t.trigger_rule),
                                  "upstream": sorted(t.upstream_task_ids), "retries": t.retries}
                      for t in dag.tasks},
        }
    return {"import_errors": {str(k): str(v) for k, v in bag.import_errors.items()}, "dags": dags}


def run_dag(folder: str, dag_id: str, conf: str) -> dict:
    from airflow.dag_processing.dagbag import DagBag

    started = time.perf_counter()
    dag = DagBag(dag_folder=folder).get_dag(dag_id)
    run = dag.test(run_conf=json.loads(conf))
    states = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in run.get_task_instances()}
    xcoms = {}
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        for row in session.query(XComModel).filter(XComModel.dag_id == dag_id, XComModel.run_id == run.run_id):
            value = row.value
            if isinstance(value, (str, bytes)):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            xcoms[f"{row.task_id}.{row.key}"] = value
    return {"run_id": run.run_id, "state": str(getattr(run.state, "value", run.state)), "tasks": states,
            "xcoms": xcoms, "seconds": round(time.perf_counter() - started, 1)}


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    result = describe(*args) if command == "describe" else run_dag(*args)
    print("RESULT " + json.dumps(result, default=str))
