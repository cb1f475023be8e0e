"""
### quarterly_retrain — a new baseline and a model retrained from scratch

At 03:00 on the first day of January, April, July and October,
`velocast.lifecycle.operations.cycle.quarterly_retrain`: the current data is merged into a new baseline
split version (the old test days stay held out), `model_type` is retrained from scratch on it,
and the new model is double-evaluated against the champion on the old `test_baseline`. It is
promoted only when `promote_on_deploy` is on and the `policy` decides `deploy`; otherwise it
stays registered for a person to promote. One audit row (`retrain`) records the outcome.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from velocast.choices import MODEL_TYPES, POLICIES  # names only: imports nothing


@dag(
    dag_id="quarterly_retrain",
    description="Quarterly: merge current data into a new baseline and retrain from scratch",
    schedule="0 3 1 */3 *",
    start_date=pendulum.datetime(2025, 1, 1, tz="Europe/Paris"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "velocast", "retries": 0},
    tags=["velocast", "lifecycle", "quarterly"],
    doc_md=__doc__,
    params={
        "model_type": Param("lgbm", type="string", enum=list(MODEL_TYPES), description="Model family to retrain."),
        "promote_on_deploy": Param(False, type="boolean",
                                   description="Promote the new model when the decision is 'deploy'."),
        "policy": Param("double_eval", type="string", enum=list(POLICIES),
                        description="Decision policy of the evaluation against the champion."),
        "test_mode": Param(False, type="boolean", description="Train and evaluate on small samples."),
    },
)
def quarterly_retrain():
    @task
    def retrain(params=None):
        from velocast.lifecycle.operations.cycle import quarterly_retrain as step

        return step(params["model_type"], merge=True, policy=params["policy"], test_mode=params["test_mode"],
                    promote_on_deploy=params["promote_on_deploy"])

    retrain()


quarterly_retrain()
