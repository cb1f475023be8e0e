"""Metrics of a model on a dataset: pure functions of arrays, no I/O."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class RegressionMetrics:
    rmse: float
    mae: float
    r2: float | None  # None for a single row: R² is not defined (as scikit-learn's r2_score says)
    rmse_log1p: float
    n: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class ClassificationMetrics:
    accuracy: float
    precision: float
    recall: float
    f1: float
    auc: float | None
    n: int

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


Metrics = RegressionMetrics | ClassificationMetrics


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> RegressionMetrics:
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true values but {len(y_pred)} predictions")
    if len(y_true) == 0:
        raise ValueError("cannot score an empty dataset")
    err = y_pred - y_true
    total = float(np.sum((y_true - y_true.mean()) ** 2))
    # constant counts: 1 for exact predictions, else 0 (scikit-learn's r2_score convention)
    r2 = 1.0 - float(np.sum(err**2)) / total if total > 0 else (1.0 if np.allclose(err, 0) else 0.0)
    log_err = np.log1p(np.clip(y_pred, 0, None)) - np.log1p(np.clip(y_true, 0, None))
    return RegressionMetrics(rmse=float(np.sqrt(np.mean(err**2))), mae=float(np.mean(np.abs(err))),
                             r2=r2 if len(y_true) > 1 else None,
                             rmse_log1p=float(np.sqrt(np.mean(log_err**2))), n=len(y_true))


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float = 0.5) -> ClassificationMetrics:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

    y_true, proba = np.asarray(y_true, int), np.asarray(proba, float)
    if len(y_true) == 0:
        raise ValueError("cannot score an empty dataset")
    pred = (proba >= threshold).astype(int)
    auc = float(roc_auc_score(y_true, proba)) if len(np.unique(y_true)) == 2 else None
    return ClassificationMetrics(
        accuracy=float(accuracy_score(y_true, pred)),
        precision=float(precision_score(y_true, pred, zero_division=0)),
        recall=float(recall_score(y_true, pred, zero_division=0)),
        f1=float(f1_score(y_true, pred, zero_division=0)), auc=auc, n=len(y_true))


def breakdown(frame: pd.DataFrame, by: str, y: str = "bike_count", pred: str = "prediction") -> pd.DataFrame:
    """RMSE, MAE, mean count and rows per group (e.g. per counter or per Paris hour)."""
    err = frame[pred] - frame[y]
    grouped = pd.DataFrame({by: frame[by], "se": err**2, "ae": err.abs(), "y": frame[y]}).groupby(by)
    out = pd.DataFrame({"rmse": np.sqrt(grouped["se"].mean()), "mae": grouped["ae"].mean(),
                        "mean_count": grouped["y"].mean(), "rows": grouped.size()})
    return out.sort_values("rmse", ascending=False)


def metric_is_better(metric: str, a: float, b: float) -> bool:
    """True when value ``a`` of ``metric`` is strictly better than ``b``."""
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return False
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return True
    return a < b if lower_is_better(metric) else a > b


def lower_is_better(metric: str) -> bool:
    return metric.split("_")[0] in {"rmse", "mae", "brier", "log", "ece"}
