"""The closed sets of names velocast accepts, declared once.

The library validates against these tuples; the API's pydantic ``Literal`` types, the CLI's choice
lists and the Airflow DAGs' ``Param(enum=...)`` are built from them. This module imports nothing,
so a DAG file may import it at parse time.
"""

from __future__ import annotations

MODEL_TYPES = ("lgbm", "rf", "nn", "rf_class", "baseline")
HORIZONS = ("calendar", "day-ahead")
DATA_SOURCES = ("baseline", "current", "reference")
# what `velocast train` (and POST /train) fit on by default: train_baseline plus train_current, the
# newest days that are not held out. With `baseline` a fresh champion ignored the month after the
# split's cutoff: trained that way up to 2021-07-09 and asked for 2021-07-10..08-09 day by day as
# served (`velocast predict` on rows without counts), lgbm day-ahead scored RMSE 29.70 against
# 27.26 with `reference` (outage rows left out; README, "What a run trains on").
DEFAULT_DATA_SOURCE = "reference"
ENVS = ("dev", "prod")
# champion/challenger decision policies (velocast.evaluation.policies)
POLICIES = ("double_eval", "relative_rmse", "significant")
# how the weekly cycle fine-tunes: retrain on a sliding window, or continue from the champion
STRATEGIES = ("sliding_window", "continue")
# what the audit log records (velocast.lifecycle.audit)
# what velocast records (drift and health verdicts are kept as reports and in the cycle's row, not as events)
AUDIT_EVENTS = ("training", "evaluation", "promotion", "rollback", "cycle", "retrain", "recalibration", "error")
# training jobs (velocast.lifecycle.operations.jobs)
JOB_STATES = ("queued", "running", "succeeded", "failed")
JOB_RUNNERS = ("api", "airflow")

__all__ = ["AUDIT_EVENTS", "DATA_SOURCES", "ENVS", "HORIZONS", "JOB_RUNNERS", "JOB_STATES", "MODEL_TYPES",
           "POLICIES", "STRATEGIES"]
