"""``velocast simulate``: replay stored data week by week and show what the policy earns.

A simulation gets its own velocast home (``<home>/simulations/<id>``): its store starts with the
data before START, a baseline is split there and a first champion trained and promoted. Then each
week arrives: the three contenders forecast it day-ahead *before* seeing it —

- ``never``: the first champion, never retrained;
- ``always``: the latest fine-tuned challenger, deployed whatever its evaluation said;
- ``policy``: the champion the weekly cycle keeps or promotes with the chosen policy —

then the week is ingested and the real weekly cycle runs (which recalibrates the champion's
prediction intervals). Weekly RMSE of the three, the empirical coverage and mean width of the
policy champion's prediction intervals (``VELOCAST_INTERVAL_COVERAGE``), and every decision are
written as a table (CSV and Markdown), a plot and JSON.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from velocast import progress
from velocast.config import Settings, get_settings
from velocast.data import splits, store
from velocast.data.schema import paris_midnight, to_paris
from velocast.lifecycle.decisions.promotion import promote
from velocast.lifecycle.operations.cycle import check_options, cycle_env, fine_tune, monitor_and_fine_tune
from velocast.lifecycle.serving.scoring import ServedRows
from velocast.lifecycle.training.train import train
from velocast.models import get_spec
from velocast.tracking.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class WeekRow:
    week: int
    start: str
    end: str
    rows: int
    rmse_never: float
    rmse_always: float
    rmse_policy: float
    coverage_policy: float | None  # empirical coverage of the policy champion's intervals that week
    width_policy: float | None  # their mean width
    champion_version: str | None
    drift_detected: bool | None
    drift_share: float | None
    health_state: str | None
    fine_tuned: bool
    decision: str | None
    promoted: bool
    challenger_version: str | None
    cycle_status: str
    reasons: str


@dataclass
class SimulationResult:
    simulation_id: str
    home: str
    model_type: str
    policy: str
    start: str
    weeks: list[WeekRow] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def totals(self) -> dict[str, float]:
        if not self.weeks:
            return {}
        n = np.array([w.rows for w in self.weeks], float)
        out = {}
        for name in ("never", "always", "policy"):
            rmse = np.array([getattr(w, f"rmse_{name}") for w in self.weeks], float)
            out[name] = float(np.sqrt(np.sum(rmse**2 * n) / n.sum()))
        return out

    def coverage(self) -> float | None:
        """Empirical coverage of the policy champion's intervals over every simulated row."""
        weeks = [w for w in self.weeks if w.coverage_policy is not None]
        if not weeks:
            return None
        n = np.array([w.rows for w in weeks], float)
        return float(np.sum(np.array([w.coverage_policy for w in weeks]) * n) / n.sum())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "overall_rmse": self.totals(), "overall_coverage_policy": self.coverage()}


def _isolated_settings(base: Settings, folder: Path, env: str) -> Settings:
    return base.model_copy(update={"home": folder, "mlflow_tracking_uri": None, "summary_uri": None,
                                   "audit_url": None, "webhook_url": None, "env": env})


def simulate(start: str, weeks: int = 20, model_type: str = "lgbm", policy: str = "double_eval",
             window_days: int = 30, strategy: str = "sliding_window", test_mode: bool = False,
             settings: Settings | None = None, keep_home: bool = True,
             on_week: Callable[[WeekRow], None] | None = None, env: str | None = None) -> SimulationResult:
    """Replay the stored data from ``start`` week by week (see the module docstring).

    ``env`` (default ``VELOCAST_ENV``) is recorded with every run and audit row of the simulation,
    its first champion included; in test mode it is ``dev``, as for a test-mode cycle.
    """
    settings = settings or get_settings()
    env = env or settings.env
    check_options(model_type, policy, strategy, window_days, env)  # a typo refused before the first champion trains
    env = cycle_env(env, test_mode)
    if get_spec(model_type).task != "regression":
        raise ValueError("simulate compares forecast RMSE: use a regression model type")
    source = store.query_counts(settings=settings)
    if source.empty:
        raise ValueError("the store is empty: ingest data first (velocast data ingest …)")
    start_ts = to_paris(start, naive="paris")
    if not (source["timestamp"].min() < start_ts < source["timestamp"].max()):
        raise ValueError(f"START {start} must fall inside the stored period "
                         f"({source['timestamp'].min().date()} .. {source['timestamp'].max().date()})")
    sim_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{model_type}-{policy}"
    sim = _isolated_settings(settings, settings.home.resolve() / "simulations" / sim_id, env)
    out_dir = settings.reports_dir.resolve() / "simulations" / sim_id
    out_dir.mkdir(parents=True, exist_ok=True)
    progress.step(f"simulation home {sim.home}: copying the {int((source['timestamp'] < start_ts).sum()):,} counts "
                  f"before {start_ts.date()}")
    store.upsert_counts(source[source["timestamp"] < start_ts], sim)
    if settings.weather_path.exists():
        sim.weather_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(settings.weather_path, sim.weather_path)
    splits.record_split(start_ts.date(), settings=sim, notes=[f"simulation {sim_id}"])
    progress.step(f"training the first champion on the data before {start_ts.date()}", done=0, total=weeks)
    with progress.scope("first champion"):
        first = train(model_type, data_source="baseline", env=env, model_test=test_mode, settings=sim,
                      run_name=f"{model_type}-simulation-start")
    # the replay needs a first champion, whatever its gate or sample: forced (an override only if it had blockers)
    promote(model_type, version=first.model_version, settings=sim, force=True,
            reason="simulation: the first champion of the replay")
    registry = Registry(sim)
    never = registry.load(registry.get(model_type, first.model_version))
    always = never
    result = SimulationResult(sim_id, str(sim.home), model_type, policy, str(start_ts.date()))
    for week in range(weeks):
        lo, hi = paris_midnight(start_ts, 7 * week), paris_midnight(start_ts, 7 * (week + 1))
        arriving = source[(source["timestamp"] >= lo) & (source["timestamp"] < hi)].reset_index(drop=True)
        if arriving.empty:
            log.warning("no data for week %d (%s): the simulation stops", week + 1, lo.date())
            break
        progress.step(f"week {week + 1}/{weeks} ({lo.date()}): forecasting {len(arriving):,} counter-hours with "
                      "the three models", done=week, total=weeks)
        rows = ServedRows.build(arriving, sim)  # forecast day by day as served, before the week is ingested
        champion_ref = registry.champion(model_type)
        champion = registry.load(champion_ref)
        scores = {name: rows.score(model).metrics
                  for name, model in (("never", never), ("always", always), ("policy", champion))}
        rmse = {name: metrics["rmse"] for name, metrics in scores.items()}
        store.upsert_counts(arriving, sim)
        with progress.scope(f"week {week + 1}/{weeks}"):
            cycle = monitor_and_fine_tune(model_type, test_mode=test_mode, window_days=window_days,
                                          strategy=strategy, policy=policy, env=env, settings=sim)
        challenger_version = cycle.challenger_version
        if challenger_version is None and cycle.status != "error":  # "always retrain" needs a challenger anyway
            progress.step(f"week {week + 1}/{weeks}: fine-tuning the 'always retrain' challenger")
            with progress.scope(f"week {week + 1}/{weeks}"):
                challenger_version = fine_tune(model_type, strategy, window_days, None, test_mode, env,
                                               settings=sim).version
        if challenger_version is not None:
            always = registry.load(registry.get(model_type, challenger_version))
        row = WeekRow(week + 1, str(lo.date()), str(paris_midnight(hi, -1).date()), len(rows),
                      rmse["never"], rmse["always"], rmse["policy"], scores["policy"].get("interval_coverage"),
                      scores["policy"].get("interval_width"), champion_ref.version, cycle.drift_detected,
                      cycle.drift_share, cycle.health_state, cycle.fine_tuned, cycle.decision, cycle.promoted,
                      cycle.challenger_version, cycle.status, " | ".join(cycle.reasons) or (cycle.error or ""))
        result.weeks.append(row)
        if on_week:
            on_week(row)
    result.files = _write(result, out_dir)
    if not keep_home:
        shutil.rmtree(sim.home, ignore_errors=True)
    return result


def _write(result: SimulationResult, out_dir: Path) -> dict[str, str]:
    table = pd.DataFrame([asdict(w) for w in result.weeks])
    files = {"csv": out_dir / "weekly.csv", "markdown": out_dir / "weekly.md", "json": out_dir / "simulation.json",
             "plot": out_dir / "weekly_rmse.png"}
    table.to_csv(files["csv"], index=False)
    shown = table[["week", "start", "rows", "rmse_never", "rmse_always", "rmse_policy", "coverage_policy",
                   "width_policy", "champion_version", "drift_detected", "health_state", "decision",
                   "promoted"]] if len(table) else table
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    for _, r in shown.iterrows():
        lines.append("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in r) + " |")
    totals = result.totals()
    if totals:
        lines.append("")
        lines.append("Overall RMSE: " + ", ".join(f"{k} {v:.2f}" for k, v in totals.items()))
    if result.coverage() is not None:
        lines.append(f"Prediction intervals of the policy champion: empirical coverage {result.coverage():.3f} "
                     f"(nominal {get_settings().interval_coverage:.2f})")
    files["markdown"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    files["json"].write_text(json.dumps(result.to_dict(), indent=2, default=str), encoding="utf-8")
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    if len(table):
        for name, style in (("never", "--"), ("always", ":"), ("policy", "-")):
            ax.plot(table["week"], table[f"rmse_{name}"], style, marker="o", label=name)
        promoted = table[table["promoted"]]
        ax.scatter(promoted["week"], promoted["rmse_policy"], s=90, facecolors="none", edgecolors="red",
                   label="promotion")
    ax.set(xlabel="week", ylabel="RMSE (day-ahead, that week)",
           title=f"{result.model_type}: never vs always retrain vs policy '{result.policy}'")
    ax.legend()
    fig.savefig(files["plot"], dpi=90, bbox_inches="tight")
    return {k: str(v) for k, v in files.items()}
