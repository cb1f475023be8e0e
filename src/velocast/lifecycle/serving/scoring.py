"""Score models on labelled rows built as served: the one way velocast measures a model.

``ServedRows.build`` prepares labelled rows once, the way the serving path would have built them
at each day's cut-off (``velocast.lifecycle.inputs``), in two weather variants:

- ``with_weather``: the weather forecast stored for the hour, else its observed weather taken as
  a perfect forecast (the best a weather forecast can do);
- ``without_weather``: no weather at all (the model's no-weather sibling predicts).

Regression scores include the prediction intervals at the configured coverage
(``VELOCAST_INTERVAL_COVERAGE``): empirical coverage, mean width, interval score and pinball
loss, the worst counter's coverage and the share of counters inside the coverage band
(``velocast.evaluation.intervals``), when the model is calibrated.

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
from velocast.data.splits import paris_day
from velocast.evaluation.intervals import (
    IntervalMetrics,
    counter_coverage,
    counter_summary,
    coverage_band,
    interval_metrics,
)
from velocast.evaluation.metrics import (
    ClassificationMetrics,
    RegressionMetrics,
    classification_metrics,
    regression_metrics,
)
from velocast.features import paris_day_hour
from velocast.lifecycle.inputs import Inputs, build_inputs, decision_weather, outage_flags
from velocast.lifecycle.serving.adaptation import errors_for, online_rule
from velocast.models import classification_labels, predict_frame, task_of
from velocast.models.intervals import OnlineRule, RecentErrors

WEATHER_VARIANTS = ("with_weather", "without_weather")


@dataclass
class Scored:
    metrics: RegressionMetrics | ClassificationMetrics
    predictions: np.ndarray  # counts (regression) or probabilities (classification)
    labels: np.ndarray | None = None  # classification targets
    intervals: IntervalMetrics | None = None  # regression with calibrated intervals
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    per_counter: pd.DataFrame | None = None  # ``counter_coverage`` of the intervals
    counters: dict[str, Any] = field(default_factory=dict)  # ``counter_summary``

    def to_dict(self) -> dict[str, Any]:
        """Point metrics, then the interval metrics (``interval_*``) when the model has intervals."""
        out = self.metrics.to_dict()
        if self.intervals is not None:
            out.update(self.intervals.to_dict())
            out.update(self.counters)
        return out


def score(pipeline: Any, rows: pd.DataFrame, coverage: float | None = None,
          tolerance: float | None = None, rule: OnlineRule | None = None,
          recent: RecentErrors | None = None) -> Scored:
    """Metrics of ``pipeline`` on enriched, labelled ``rows`` (as they are: no weather rule applied).

    ``coverage``: of the intervals scored (default ``VELOCAST_INTERVAL_COVERAGE``); ``tolerance``:
    the half-width of the band a counter's coverage should stay in (``VELOCAST_COVERAGE_TOLERANCE``);
    ``rule``: how each day follows the errors of the days before it, as serving does (default
    ``adaptation.online_rule``: ``VELOCAST_INTERVAL_ADAPT_DAYS``, ``VELOCAST_BIAS_CORRECTION_DAYS``):
    the ``recent`` ones (the store's, ``adaptation.errors_for``) and the scored rows' own of the
    days ``recent`` lacks.
    """
    y = rows["bike_count"].to_numpy(float)
    if task_of(pipeline) == "classification":
        out = predict_frame(pipeline, rows)
        labels = classification_labels(pipeline, rows, y)
        proba = out["probability"].to_numpy()
        return Scored(classification_metrics(labels, proba), proba, labels)
    if coverage is None or tolerance is None or rule is None:
        settings = get_settings()
        coverage = settings.interval_coverage if coverage is None else coverage
        tolerance = settings.coverage_tolerance if tolerance is None else tolerance
        rule = online_rule(settings) if rule is None else rule
    return scored_predictions(rows, predict_frame(pipeline, rows, coverage, rule, recent, learn_from_rows=True),
                              coverage, tolerance)


def scored_predictions(rows: pd.DataFrame, out: pd.DataFrame, coverage: float, tolerance: float) -> Scored:
    """The regression scores of predictions ``out`` (``prediction``, ``lower``, ``upper``) of labelled
    ``rows``: the point metrics, and the interval metrics when every row has bounds."""
    y = rows["bike_count"].to_numpy(float)
    pred = out["prediction"].to_numpy(float)
    scored = Scored(regression_metrics(y, pred), pred)
    lower, upper = out["lower"].to_numpy(float), out["upper"].to_numpy(float)
    if np.isfinite(lower).all() and np.isfinite(upper).all():
        days = paris_day(rows["timestamp"]).astype(str).to_numpy()
        per_counter = counter_coverage(rows["counter_id"].astype(str).to_numpy(), days, y, lower, upper,
                                       min_days=min(MIN_COUNTER_DAYS, len(np.unique(days))))
        scored.intervals = interval_metrics(y, lower, upper, coverage)
        scored.lower, scored.upper, scored.per_counter = lower, upper, per_counter
        scored.counters = counter_summary(per_counter, coverage_band(coverage, tolerance))
    return scored


# a counter's coverage is judged over at least this many days (fewer when the set is shorter)
MIN_COUNTER_DAYS = 14


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
    coverage: float | None = None  # of the intervals scored (None: VELOCAST_INTERVAL_COVERAGE)
    tolerance: float | None = None  # coverage band half-width (None: VELOCAST_COVERAGE_TOLERANCE)
    rule: OnlineRule | None = None  # following the errors of the days before (None: adaptation.online_rule)
    settings: Settings | None = None  # the store the days before the rows are read from (adaptation)

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
        return cls(variants, weather or decision_weather(settings), int(flagged.sum()), notes,
                   settings.interval_coverage, settings.coverage_tolerance, online_rule(settings), settings)

    @property
    def decision_rows(self) -> pd.DataFrame:
        return self.variants[f"{self.weather}_weather"]

    @property
    def calibration_rows(self) -> pd.DataFrame:
        """Both weather variants stacked: the rows prediction intervals are calibrated on."""
        return pd.concat([self.variants[v] for v in WEATHER_VARIANTS], ignore_index=True)

    def subset(self, keep: np.ndarray) -> ServedRows:
        """The same rows restricted to ``keep`` (a mask over the rows of every variant)."""
        keep = np.asarray(keep, bool)
        return ServedRows({v: rows[keep].reset_index(drop=True) for v, rows in self.variants.items()}, self.weather,
                          self.outage_rows, list(self.notes), self.coverage, self.tolerance, self.rule,
                          self.settings)

    def days(self) -> np.ndarray:
        """The Paris day (ISO) of each row."""
        return paris_day(self.decision_rows["timestamp"]).astype(str).to_numpy()

    def __len__(self) -> int:
        return len(self.decision_rows)

    def score(self, pipeline: Any) -> ServedScores:
        if not len(self):
            raise ValueError("nothing to score: every row lies in a sensor outage")
        settings = self.settings or get_settings()
        rule = self.rule if self.rule is not None else online_rule(settings)
        recent = None
        if rule.window > 0 and task_of(pipeline) == "regression":  # the store's days, as served
            recent = errors_for(pipeline, paris_day_hour(self.decision_rows["timestamp"])[0], rule, settings)
        scored = {variant: score(pipeline, rows, self.coverage, self.tolerance, rule, recent)
                  for variant, rows in self.variants.items()}
        decision = scored[f"{self.weather}_weather"]
        return ServedScores(self.weather, decision.to_dict(),
                            {variant: s.to_dict() for variant, s in scored.items()},
                            decision.predictions, self.outage_rows, decision)


__all__ = ["MIN_COUNTER_DAYS", "WEATHER_VARIANTS", "Scored", "ServedRows", "ServedScores", "score",
           "scored_predictions"]
