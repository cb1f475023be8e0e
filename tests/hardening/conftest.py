"""Shared settings of the hardening tests (property-based, API fuzzing, kill -9 faults, security).

Hypothesis runs derandomized and without an example database: the same inputs on every machine and
every run, so a CI failure reproduces locally. Each property bounds its own ``max_examples``.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

SUPPRESSED = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large,
              HealthCheck.filter_too_much]


def properties(max_examples: int) -> settings:
    """Hypothesis settings of one property: bounded, deterministic, database-less, no deadline."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=SUPPRESSED, print_blob=False)
