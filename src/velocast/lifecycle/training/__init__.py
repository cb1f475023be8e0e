"""Training: the datasets of a run, fitting and tuning (one process or a Dask cluster), tracking in
MLflow and summary.json. See ``velocast.lifecycle``."""
