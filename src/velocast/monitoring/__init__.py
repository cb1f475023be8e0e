"""Production monitoring of velocast models: data, target and prediction drift.

``velocast.monitoring.drift`` compares a current window of rows with a reference (the training
data, restricted to the same season and re-mixed to the same weekdays and hours) and returns a
plain ``DriftReport``; its writer puts a JSON verdict and an evidently HTML rendering on disk.
"""
