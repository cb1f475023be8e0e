"""velocast: hourly bike-count forecasting with a champion/challenger lifecycle."""

import os

__version__ = "0.1.0"

# OpenMP threads (LightGBM, scikit-learn, torch) sleep instead of spinning while they wait for each
# other. Spinning (OpenMP's usual default) lets two LightGBM fits sharing 2 cores (a training beside
# the API, parallel Airflow tasks, the test workers) slow each other down many times over (a pair of
# 300-tree fits: 614 s each against 14-20 s); alone, sleeping costs 0-20% (bench/omp_wait.py). Read
# when libgomp loads, so it must be set before LightGBM is imported; an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
