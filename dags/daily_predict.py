"""
### daily_predict — day-ahead forecasts of every counter

Every day, two steps calling `velocast.lifecycle.operations.daily`:
1. `fetch_weather_forecast` (`fetch_weather`): the weather forecast of
   `$VELOCAST_WEATHER_FORECAST_URL` (Open-Meteo) is stored with its issue time (now). A failure is
   logged and returned (`status: failed`, `error`), never raised: the prediction still runs.
2. `predict_tomorrow`: the champion of `model_type` (the latest version when there is none)
   forecasts each hour of the day to forecast — the latest stored day if it is incomplete, else the
   next one — for every counter in the store, written atomically to
   `$VELOCAST_HOME/store/forecasts/date=YYYY-MM-DD/forecasts.parquet` with the model version and the
   generation time. A forecast for day D may use only weather forecasts issued by 00:00 of D; the
   task's `weather_forecast` says which one covers D, or that D is forecast without weather (and why).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from velocast.choices import MODEL_TYPES  # names only: imports nothing


@dag(
    dag_id="daily_predict",
    description="Day-ahead forecasts of every stored counter, written to the velocast store",
    schedule="0 3 * * *",  # daily, after daily_ingest (00:00) has brought in the last counts
    start_date=pendulum.datetime(2025, 1, 1, tz="Europe/Paris"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "velocast", "retries": 0},
    tags=["velocast", "serving", "daily"],
    doc_md=__doc__,
    params={"model_type": Param("lgbm", type="string", enum=list(MODEL_TYPES),
                               description="Model family whose champion forecasts.")},
)
def daily_predict():
    @task
    def fetch_weather_forecast():
        from velocast.lifecycle.operations.daily import fetch_weather

        return fetch_weather()

    @task(trigger_rule="all_done")
    def predict_tomorrow(weather=None, params=None):
        from velocast.lifecycle.operations.daily import predict_tomorrow as predict

        return predict(params["model_type"], weather_fetch=weather)

    predict_tomorrow(fetch_weather_forecast())


daily_predict()
