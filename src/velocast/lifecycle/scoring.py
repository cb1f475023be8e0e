"""Score models on labelled rows built as served: the one way velocast measures a model.

``ServedRows.build`` prepares labelled rows once, the way the serving path would have built them
at each day's cut-off (``velocast.lifecycle.inputs``), in two weather variants:

- ``with_weather``: the weather forecast stored for the hour, else its observed weather taken as
  a perfect forecast (the best a weather forecast can do);
- ``without_weather``: no weather at all (the model's no-weather sibling predicts).

Rows inside a sensor outage (``velocast.data.quality``) are left out and counted. Every model
scored on the same ``ServedRows`` sees exactly the same rows (the double evaluation). The
*decision* metrics are those of the variant that matches how forecasts will be served
(``inputs.decision_weather``): they are the run's headline ``test_baseline_rmse`` etc.; both
variants are reported beside them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from velocast.config import Settings, get_settings
from velocast.evaluation.metrics import (
    ClassificationMetrics,
    RegressionMetrics,
    classification_metrics,
    regression_metrics,
)
from velocast.lifecycle.inputs import Inputs, build_inputs, decision_weather, outage_flags
from velocast.models import classification_labels, get_spec, predict_frame

WEATHER_VARIANTS = ("with_weather", "without_weather")


@dataclass
class Scored:
    metrics: RegressionMetrics | ClassificationMetrics
    predictions: np.ndarray  # counts (regression) or probabilities (classification)
    labels: np.ndarray | None = None  # classification targets


def score(pipeline: object, model_type: str, rows: pd.DataFrame) -> Scored:
    """Metrics of ``pipeline`` on enriched, labelled ``rows`` (as they are: no weather rule applied)."""
    y = rows["bike_count"].to_numpy(float)
    out = predict_frame(pipeline, rows)
    if get_spec(model_type).task == "classification":
        labels = classification_labels(pipeline, rows, y)
        proba = out["probability"].to_numpy()
        return Scored(classification_metrics(labels, proba), proba, labels)
    pred = out["prediction"].to_numpy(float)
    return Scored(regression_metrics(y, pred), pred)


@dataclass
class ServedScores:
    """One model's scores on ``ServedRows``: the decision's variant and both variants."""

    weather: str  # "with" or "without": the variant the decision uses
    metrics: dict[str, Any]
    by_weather: dict[str, dict[str, Any]]
    predictions: np.ndarray  # on ``ServedRows.decision_rows``
    outage_rows: int
    scored: Scored | None = None  # the decision variant's, for reports and classifier labels

    def to_dict(self) -> dict[str, Any]:
        return {"weather": self.weather, "metrics": self.metrics, "by_weather": self.by_weather,
                "outage_rows_excluded": self.outage_rows}

    def flat(self) -> dict[str, Any]:
        """The decision metrics plus ``with_weather_*``/``without_weather_*`` copies (MLflow, summary)."""
        out = dict(self.metrics)
        for variant, metrics in self.by_weather.items():
            out.update({f"{variant}_{k}": v for k, v in metrics.items() if k != "n"})
        out["outage_rows_excluded"] = self.outage_rows
        return out


@dataclass
class ServedRows:
    """Labelled rows built as served in both weather variants, sensor-outage rows left out."""

    variants: dict[str, pd.DataFrame]
    weather: str  # "with" or "without"
    outage_rows: int = 0
    notes: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, rows: pd.DataFrame, settings: Settings | None = None,
              extra_history: pd.DataFrame | None = None, inputs: Inputs | None = None,
              weather: str | None = None, outages_removed: bool = False) -> ServedRows:
        """``inputs``: the rows' prepared history if already built; ``outages_removed``: skip that check."""
        settings = settings or get_settings()
        rows = rows.reset_index(drop=True)
        inputs = inputs or build_inputs(rows, settings, extra_history)
        flagged = np.zeros(len(rows), bool) if outages_removed else outage_flags(rows, settings)
        keep = ~flagged
        variants = {"with_weather": inputs.frame("with_weather")[keep].reset_index(drop=True),
                    "without_weather": inputs.frame("none")[keep].reset_index(drop=True)}
        notes = [f"{int(flagged.sum())} rows in sensor outages (runs of >= {settings.outage_min_zero_hours} zero "
                 "hours) left out of the score"] if flagged.any() else []
        return cls(variants, weather or decision_weather(settings), int(flagged.sum()), notes)

    @property
    def decision_rows(self) -> pd.DataFrame:
        return self.variants[f"{self.weather}_weather"]

    def __len__(self) -> int:
        return len(self.decision_rows)

    def score(self, pipeline: object, model_type: str) -> ServedScores:
        if not len(self):
            raise ValueError("nothing to score: every row lies in a sensor outage")
        scored = {variant: score(pipeline, model_type, rows) for variant, rows in self.variants.items()}
        decision = scored[f"{self.weather}_weather"]
        return ServedScores(self.weather, decision.metrics.to_dict(),
                            {variant: s.metrics.to_dict() for variant, s in scored.items()},
                            decision.predictions, self.outage_rows, decision)


__all__ = ["Scored", "ServedRows", "ServedScores", "WEATHER_VARIANTS", "score"]
