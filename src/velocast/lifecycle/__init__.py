"""The lifecycle: train, evaluate, promote, monitor and fine-tune, audit, notify.

The CLI, the API and the Airflow DAGs are thin shells over these functions.
"""
