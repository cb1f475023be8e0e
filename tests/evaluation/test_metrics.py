"""Regression metrics against scikit-learn's, and where R² is not defined."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from velocast.evaluation.metrics import regression_metrics


def test_regression_metrics_equal_scikit_learns() -> None:
    rng = np.random.default_rng(7)
    y = rng.poisson(60, 500).astype(float)
    p = y + rng.normal(0, 9, 500)
    m = regression_metrics(y, p)
    assert m.rmse == pytest.approx(np.sqrt(mean_squared_error(y, p)))
    assert m.mae == pytest.approx(mean_absolute_error(y, p))
    assert m.r2 == pytest.approx(r2_score(y, p))
    assert m.rmse_log1p == pytest.approx(np.sqrt(mean_squared_error(np.log1p(y), np.log1p(np.clip(p, 0, None)))))
    assert m.n == 500


def test_r2_of_one_row_is_undefined_not_zero() -> None:
    one = regression_metrics(np.array([12.0]), np.array([15.0]))
    assert one.r2 is None and one.rmse == 3.0 and one.n == 1
    # constant counts over several rows: scikit-learn's convention (1 when exact, else 0)
    assert regression_metrics(np.array([5.0, 5.0]), np.array([5.0, 5.0])).r2 == 1.0
    assert regression_metrics(np.array([5.0, 5.0]), np.array([4.0, 6.0])).r2 == r2_score([5.0, 5.0], [4.0, 6.0])
