"""Operations: the jobs that run the lifecycle — the weekly cycle (in process or one Airflow task per
step), the daily jobs, durable training jobs, simulation and notifications. See ``velocast.lifecycle``."""
