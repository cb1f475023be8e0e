"""
### monitor_and_fine_tune — the weekly champion/challenger cycle

Every Sunday at 00:00 (Europe/Paris), one task per step of `velocast.lifecycle.operations.cycle`, the same
functions `velocast cycle` runs in one process:

`check_new_data` → `run_drift` → `run_health` → `decide` → `fine_tune` → `evaluate_challenger`
→ `promote_if_deployed` → `recalibrate` → `audit` → `notify` → `release_cycle_lease`

- **check_new_data** (branch): takes the model type's cycle lease for this DAG run (refused while a
  CLI cycle, a retrain or another run holds it), then: counts newer than what the last training or
  cycle saw? If not, and `force_fine_tune` is off, the run goes straight to `audit`
  (decision `skip_no_new_data`).
- **run_drift**, **run_health**: drift of the champion's inputs, predictions and counts over the
  last `window_days`; the champion's recent health.
- **decide** (branch): fine-tune when forced, without champion, on drift, or when the champion is
  not healthy; otherwise straight to `recalibrate` (decision `no_fine_tune`).
- **fine_tune**: a challenger trained on the recent window (`strategy`: `sliding_window` or
  `continue`), registered in MLflow.
- **evaluate_challenger**: double evaluation (test_baseline and the recent window) against the
  champion; the `policy` decides `deploy`, `reject_regression` or `skip_no_improvement`.
- **promote_if_deployed**: moves the `champion` alias when the decision is `deploy`, compare-and-swap
  against the champion `check_new_data` saw (a rollback made meanwhile wins); never in test mode.
- **recalibrate**: the champion (kept or new) gets its prediction intervals recalibrated on the
  newest labelled days it never trained on: a new version of the same point model, promoted
  (compare-and-swap) and audited as `recalibration` (skipped, with the reason, when fewer than 3
  such days exist, and in test mode).
- **audit** (runs whatever happened upstream): one row in the velocast audit log — `cycle`, or
  `error` naming the step that failed and its exception.
- **notify**: webhook (`VELOCAST_WEBHOOK_URL`) on promotion, rejection or error.
- **release_cycle_lease** (runs whatever happened upstream): gives the lease back; a lease whose
  run never released it expires after `VELOCAST_CYCLE_LEASE_SECONDS`.
- **fail_run_on_error**: runs only when a task failed, and fails, so the run is marked failed
  although `audit` and `notify` succeeded.

Params: `force_fine_tune`, `test_mode` (small samples: minutes instead of hours), `model_type`,
`window_days`, `strategy`, `policy`. Tasks exchange small dicts (versions, run ids, paths,
metrics) through XCom, never data frames. Of velocast, only the names of `velocast.choices` are imported
at parse time; the library itself inside the tasks.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, TriggerRule, chain, dag, task

from velocast.choices import MODEL_TYPES, POLICIES, STRATEGIES  # names only: imports nothing

# the cycle's step names (velocast.lifecycle.operations.cycle_steps.STEPS) -> the task running each step
STEP_TASKS = {
    "new_data": "check_new_data", "drift": "run_drift", "health": "run_health", "decide": "decide",
    "fine_tune": "fine_tune", "evaluate": "evaluate_challenger", "promote": "promote_if_deployed",
    "recalibrate": "recalibrate",
}
BRANCH_TASKS = {"check_new_data", "decide"}  # their dict is pushed under this key, not returned
RESULT_KEY = "result"
ERROR_KEY = "error"


def _lease_owner(ti) -> str:
    """The cycle lease is held by the DAG run, across its tasks."""
    return f"airflow:{ti.dag_id}:{ti.run_id}"


def _remember_error(context) -> None:
    """on_failure_callback: keep the exception as an XCom so the audit can name it."""
    error = context.get("exception")
    context["ti"].xcom_push(key=ERROR_KEY, value=f"{type(error).__name__}: {error}" if error else "failed")


@dag(
    dag_id="monitor_and_fine_tune",
    description="Weekly drift and health monitoring, fine-tuning and champion/challenger decision",
    schedule="0 0 * * 0",
    start_date=pendulum.datetime(2025, 1, 1, tz="Europe/Paris"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "velocast", "retries": 0, "on_failure_callback": _remember_error},
    tags=["velocast", "lifecycle", "weekly"],
    doc_md=__doc__,
    params={
        "force_fine_tune": Param(False, type="boolean",
                                 description="Fine-tune even without new data, drift or degraded health."),
        "test_mode": Param(False, type="boolean",
                           description="Train and evaluate on small samples (a quick end-to-end check)."),
        "model_type": Param("lgbm", type="string", enum=list(MODEL_TYPES),
                             description="Model family of the champion to monitor."),
        "window_days": Param(30, type="integer", minimum=1, description="Days of recent counts monitored and "
                                                                         "used for fine-tuning."),
        "strategy": Param("sliding_window", type="string", enum=list(STRATEGIES),
                          description="Fine-tuning: retrain on the window, or continue the champion."),
        "policy": Param("double_eval", type="string", enum=list(POLICIES),
                        description="Decision policy of the champion/challenger evaluation."),
    },
)
def monitor_and_fine_tune():
    @task.branch
    def check_new_data(params=None, ti=None):
        from velocast.lifecycle.operations.cycle_tasks import begin

        started = begin(params["model_type"], params["force_fine_tune"], owner=_lease_owner(ti),
                        test_mode=params["test_mode"])
        ti.xcom_push(key=RESULT_KEY, value=started)
        return "run_drift" if started["proceed"] else "audit"

    @task
    def run_drift(params=None, ti=None):
        from velocast.lifecycle.operations.cycle import run_drift as step

        end = ti.xcom_pull(task_ids="check_new_data", key=RESULT_KEY)["latest"]
        return step(params["model_type"], params["window_days"], end).to_dict()

    @task
    def run_health(params=None, ti=None):
        from velocast.lifecycle.operations.cycle import run_health as step

        end = ti.xcom_pull(task_ids="check_new_data", key=RESULT_KEY)["latest"]
        return step(params["model_type"], end).to_dict()

    @task.branch
    def decide(drift: dict, health: dict, params=None, ti=None):
        from velocast.lifecycle.operations.cycle_tasks import decide as step

        started = ti.xcom_pull(task_ids="check_new_data", key=RESULT_KEY)
        verdict = step(drift, health, params["force_fine_tune"], started["champion_before"])
        ti.xcom_push(key=RESULT_KEY, value=verdict)
        return "fine_tune" if verdict["fine_tune"] else "recalibrate"

    @task
    def fine_tune(params=None, ti=None):
        from velocast.lifecycle.operations.cycle import fine_tune as step

        end = ti.xcom_pull(task_ids="check_new_data", key=RESULT_KEY)["latest"]
        return step(params["model_type"], params["strategy"], params["window_days"], end,
                    params["test_mode"]).to_dict()

    @task
    def evaluate_challenger(tuned: dict, params=None, ti=None):
        from velocast.lifecycle.operations.cycle import evaluate_challenger as step

        end = ti.xcom_pull(task_ids="check_new_data", key=RESULT_KEY)["latest"]
        return step(params["model_type"], tuned["version"], params["window_days"], end, params["policy"],
                    params["test_mode"]).to_dict()

    @task
    def promote_if_deployed(tuned: dict, evaluated: dict, params=None, ti=None):
        from velocast.lifecycle.operations.cycle import promote_if_deployed as step

        started = ti.xcom_pull(task_ids="check_new_data", key=RESULT_KEY)
        return step(params["model_type"], tuned["version"], evaluated["decision"], evaluated["reasons"],
                    expected_champion=started["champion_before"], test_mode=params["test_mode"]).to_dict()

    # after promote_if_deployed, or straight after decide when nothing was fine-tuned
    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def recalibrate(params=None, ti=None):
        from velocast.lifecycle.operations.cycle import run_recalibration as step

        started = ti.xcom_pull(task_ids="check_new_data", key=RESULT_KEY)
        moved = ti.xcom_pull(task_ids="promote_if_deployed")  # None when nothing was fine-tuned
        left = moved["champion_after"] if moved and moved["promoted"] else started["champion_before"]
        # the champion this run left, and no other (a rollback meanwhile wins)
        return step(params["model_type"], started["latest"], test_mode=params["test_mode"],
                    expected_champion=left).to_dict()

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def audit(params=None, ti=None):
        from velocast.lifecycle.operations.cycle_tasks import finish

        task_ids = list(STEP_TASKS.values())
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id], task_ids=task_ids).get(ti.run_id, {})
        outputs, task_states, errors = {}, {}, {}
        for step, task_id in STEP_TASKS.items():
            key = RESULT_KEY if task_id in BRANCH_TASKS else "return_value"
            outputs[step] = ti.xcom_pull(task_ids=task_id, key=key)
            task_states[step] = states.get(task_id)
            errors[step] = ti.xcom_pull(task_ids=task_id, key=ERROR_KEY)
        return finish(outputs, task_states, errors, model_type=params["model_type"],
                      force_fine_tune=params["force_fine_tune"], test_mode=params["test_mode"],
                      window_days=params["window_days"], strategy=params["strategy"], policy=params["policy"])

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def notify(params=None, ti=None):
        from velocast.lifecycle.operations.cycle_tasks import notify as step

        return step(ti.xcom_pull(task_ids="audit"), params["model_type"])

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def release_cycle_lease(params=None, ti=None):
        from velocast.lifecycle.operations.cycle_tasks import release

        return release(params["model_type"], _lease_owner(ti))

    @task(trigger_rule=TriggerRule.ONE_FAILED)
    def fail_run_on_error():
        raise RuntimeError("a step of the cycle failed: its error is in the audit log (event 'error') "
                           "and in the failed task's log")

    started = check_new_data()
    drift = run_drift()
    health = run_health()
    verdict = decide(drift, health)
    tuned = fine_tune()
    evaluated = evaluate_challenger(tuned)
    promoted = promote_if_deployed(tuned, evaluated)
    recalibrated = recalibrate()
    audited = audit()
    notified = notify()
    released = release_cycle_lease()
    chain(started, drift, health, verdict, tuned, evaluated, promoted, recalibrated, audited, notified, released)
    started >> audited  # branch: no new data -> audit
    verdict >> recalibrated  # branch: no fine-tuning -> recalibrate
    [started, drift, health, verdict, tuned, evaluated, promoted, recalibrated, audited, notified,
     released] >> fail_run_on_error()


monitor_and_fine_tune()
