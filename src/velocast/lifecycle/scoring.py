"""Score a fitted pipeline on labelled rows: predictions and metrics for its task."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from velocast.evaluation.metrics import (
    ClassificationMetrics,
    RegressionMetrics,
    classification_metrics,
    regression_metrics,
)
from velocast.models import classification_labels, get_spec, predict_frame


@dataclass
class Scored:
    metrics: RegressionMetrics | ClassificationMetrics
    predictions: np.ndarray  # counts (regression) or probabilities (classification)
    labels: np.ndarray | None = None  # classification targets


def score(pipeline: object, model_type: str, rows: pd.DataFrame) -> Scored:
    """Metrics of ``pipeline`` on enriched, labelled ``rows``."""
    y = rows["bike_count"].to_numpy(float)
    out = predict_frame(pipeline, rows)
    if get_spec(model_type).task == "classification":
        labels = classification_labels(pipeline, rows, y)
        proba = out["probability"].to_numpy()
        return Scored(classification_metrics(labels, proba), proba, labels)
    pred = out["prediction"].to_numpy(float)
    return Scored(regression_metrics(y, pred), pred)
