"""The lifecycle: train, evaluate, promote, monitor and fine-tune, audit, notify.

The CLI, the API and the Airflow DAGs are thin shells over these functions. The sub-packages follow
the flow of a model; each imports only the ones listed before it (and the two shared modules):

- ``serving``: forecasts as users get them and how they are scored — a request's inputs
  (``predict``, ``fast_path``, ``served_history``), the recent errors forecasts follow
  (``adaptation``), and ``scoring`` (labelled rows built as served: the one way velocast measures a
  model, used by training, evaluation and monitoring alike).
- ``training``: what a run trains and is scored on (``datasets``), fitting and tracking it (``train``,
  ``tuning``, ``distributed`` for a Dask cluster).
- ``decisions``: the double evaluation (``evaluate``, ``challenger``), champion health and drift
  (``monitor``), moving the alias (``promotion``), recalibrating the champion's intervals
  (``recalibrate``), and what serves each model type (``champion``: the overview and
  ``ChampionCache`` used by the API, the UI and the CLI).
- ``operations``: the jobs that run it all — the weekly cycle (``cycle``, ``cycle_steps``,
  ``cycle_tasks``, ``lease``), the daily jobs (``daily``), durable training jobs (``jobs``),
  ``simulate`` and ``notify``.

Shared: ``inputs`` (what is known at forecast time: the one definition for training, scoring and
serving) and ``audit`` (the audit log every step writes to).
"""
