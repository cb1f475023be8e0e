"""Model evaluation for velocast: metrics, validation gates, plots and reports.

Modules here are pure functions of labels, predictions and policy (numpy, pandas, scikit-learn,
scipy, matplotlib): they never talk to MLflow or to the store, so any caller (training, the weekly
cycle, the CLI, tests) can use them on in-memory arrays.

- :mod:`velocast.evaluation.classifier` — validation suite of the ``rf_class`` affluence
  classifier (discrimination, calibration, thresholds, CV stability, gates, plots, reports).
"""
