"""Evaluation reports: per-counter and per-hour errors and the plots that show them.

Figures are built with matplotlib's object API (no global pyplot state) and returned, so the
caller decides where they go (MLflow artifacts, the report folder, the UI).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from velocast.evaluation.metrics import breakdown

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn
    from matplotlib.figure import Figure


@dataclass
class EvaluationReport:
    name: str  # the rows' set (test_baseline, test_current): every file it writes starts with it
    per_counter: pd.DataFrame
    per_hour: pd.DataFrame
    figures: dict[str, Figure]

    def write(self, folder: Path) -> dict[str, Path]:
        """``<name>_per_counter.csv``, ``<name>_per_hour.csv`` and the figures in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = {f"{self.name}_{part}": folder / f"{self.name}_{part}.csv" for part in ("per_counter", "per_hour")}
        self.per_counter.to_csv(paths[f"{self.name}_per_counter"])
        self.per_hour.to_csv(paths[f"{self.name}_per_hour"])
        for name, figure in self.figures.items():
            paths[name] = folder / f"{name}.png"
            figure.savefig(paths[name], dpi=90, bbox_inches="tight")
        return paths


def _figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def predicted_vs_actual(y: np.ndarray, pred: np.ndarray, title: str, max_points: int = 20_000) -> Figure:
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    if len(y) > max_points:
        idx = np.random.default_rng(0).choice(len(y), max_points, replace=False)
        y, pred = y[idx], pred[idx]
    fig = _figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.scatter(y, pred, s=3, alpha=0.3)
    top = float(max(y.max(initial=1), pred.max(initial=1)))
    ax.plot([0, top], [0, top], color="black", linewidth=1)
    ax.set(xlabel="actual count", ylabel="predicted count", title=title)
    return fig


def residuals_by_hour(per_hour: pd.DataFrame, title: str) -> Figure:
    fig = _figure(figsize=(7, 3.5))
    ax = fig.subplots()
    ordered = per_hour.sort_index()
    ax.bar(ordered.index, ordered["rmse"])
    ax.set(xlabel="hour (Europe/Paris)", ylabel="RMSE", title=title)
    return fig


def worst_counters(per_counter: pd.DataFrame, title: str, n: int = 15) -> Figure:
    top = per_counter.head(n).iloc[::-1]
    fig = _figure(figsize=(7, 0.35 * len(top) + 1))
    ax = fig.subplots()
    ax.barh([str(i) for i in top.index], top["rmse"])
    ax.set(xlabel="RMSE", title=title)
    return fig


def feature_importance_figure(importance: pd.Series, n: int = 25) -> Figure:
    top = importance.head(n).iloc[::-1]
    fig = _figure(figsize=(6, 0.3 * len(top) + 1))
    ax = fig.subplots()
    ax.barh(top.index.astype(str), top.to_numpy())
    ax.set(title="feature importance", xlabel="importance")
    return fig


def regression_report(rows: pd.DataFrame, pred: np.ndarray, name: str) -> EvaluationReport:
    """Breakdowns and plots of predictions ``pred`` for labelled canonical ``rows``."""
    frame = pd.DataFrame({"counter": rows["counter_name"].astype(str) if "counter_name" in rows
                          else rows["counter_id"].astype(str),
                          "hour": rows["timestamp"].dt.tz_convert("Europe/Paris").dt.hour.to_numpy(),
                          "bike_count": rows["bike_count"].to_numpy(float), "prediction": np.asarray(pred, float)})
    per_counter = breakdown(frame, "counter")
    per_hour = breakdown(frame, "hour")
    figures = {
        f"{name}_predicted_vs_actual": predicted_vs_actual(frame["bike_count"], frame["prediction"],
                                                           f"{name}: predicted vs actual"),
        f"{name}_residuals_by_hour": residuals_by_hour(per_hour, f"{name}: RMSE by hour"),
        f"{name}_worst_counters": worst_counters(per_counter, f"{name}: worst counters"),
    }
    return EvaluationReport(name, per_counter, per_hour, figures)
