"""velocast: hourly bike-count forecasting with a champion/challenger lifecycle."""

import os

__version__ = "0.1.0"

# OpenMP threads (LightGBM, scikit-learn, torch) sleep instead of spinning while they wait for each
# other. With the default (spinning), two LightGBM fits sharing 2 cores each took ~615 s instead of
# 14-20 s (a training beside the API, parallel Airflow tasks, the test workers); alone, both policies
# fit in the same time. Read when libgomp loads, so it must be set before LightGBM is imported: an
# explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
