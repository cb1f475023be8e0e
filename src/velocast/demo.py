"""``velocast demo``: the main job end to end on the embedded defaults (files, SQLite, local MLflow).

Data (the real Paris file when it sits beside the project, else synthetic) → ingest → one attempt at
the open-data portal (its outcome in one line; skipped without network) → weather →
split → train ``lgbm`` and ``rf`` → forecast the next day → promote the champion → one weekly cycle
→ a short week-by-week simulation → say where to look.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pandas as pd

from velocast.config import Settings, get_settings, redact

_SHARED = Path("paris")
_COUNTS = "counts_2020-09-01_2021-08-09.parquet"
_WEATHER = "weather_orly_synop.csv"


def _find_shared(name: str) -> Path | None:
    roots = [Path.cwd() / ".." / "shared" / "data", Path(__file__).resolve().parents[3] / ".." / "shared" / "data"]
    for root in roots:
        candidate = (root / _SHARED / name).resolve()
        if candidate.exists():
            return candidate
    return None


def portal_check(settings: Settings) -> str:
    """ONE bounded fetch attempt from the Paris open-data portal, told in one line.

    It asks only for the store's last hours (the overlap before its latest count), with a 3 s
    timeout and no retry, so the demo neither waits nor fills its store with years of new data;
    without network it says why it was skipped.
    """
    from velocast.data import store
    from velocast.data.opendata import OpenDataError, fetch_counts, incremental_since

    quick = settings.model_copy(update={"opendata_timeout_seconds": 3.0, "http_retries": 0})
    latest = store.latest_timestamp(quick)
    try:
        report = fetch_counts(incremental_since(quick), latest + pd.Timedelta(hours=1), settings=quick)
    except OpenDataError as exc:
        return f"open-data portal: skipped ({exc})"
    return (f"open-data portal: {report.rows_read:,} rows for {report.where} ({report.added:,} added, "
            f"{report.updated:,} updated, {report.unchanged:,} unchanged)")


# where the monitoring stack of deploy/docker-compose.yml publishes its UIs
MONITORING_URLS = {"Grafana": "http://localhost:3000", "Prometheus": "http://localhost:9090",
                   "Alertmanager": "http://localhost:9093"}
MONITORING_FILES = ("deploy/prometheus/", "deploy/alertmanager/", "deploy/grafana/", "deploy/README.md")


def where_to_look(settings: Settings) -> list[str]:
    """The demo's closing lines: where its results are, and the commands and URLs to look at them."""
    urls = ", ".join(f"{name} {url}" for name, url in MONITORING_URLS.items())
    return [f"   MLflow UI:  mlflow ui --backend-store-uri {redact(settings.tracking_uri)}",
            f"   summary:    {redact(settings.summary_location)}",
            f"   reports:    {settings.reports_dir.resolve()}",
            "   audit log:  velocast audit list   |   champion: velocast champion --history",
            "   API / UI:   velocast serve   |   velocast ui   (Prometheus metrics: GET /metrics)",
            f"   dashboards: docker compose -f deploy/docker-compose.yml --env-file deploy/.env up -d: {urls}",
            f"               (files: {', '.join(MONITORING_FILES[:-1])}; how-to: {MONITORING_FILES[-1]})"]


def run_demo(data: Path | None = None, weather: Path | None = None, fast: bool = False,
             echo: Callable[[str], None] = print, sim_weeks: int = 3) -> dict:
    from velocast.data import splits, store
    from velocast.data.ingest import ingest_file
    from velocast.data.weather import ingest_weather
    from velocast.lifecycle.operations.daily import forecast_day, next_day_rows
    from velocast.lifecycle.serving.predict import load_model, predict_rows
    from velocast.lifecycle.training.train import train

    settings = get_settings()
    started = time.perf_counter()
    echo(f"velocast demo — home: {settings.home.resolve()}")
    data = data or _find_shared(_COUNTS)
    if data is None:
        from velocast.data import synthetic

        data = settings.home / "demo" / "synthetic.parquet"
        synthetic.write(synthetic.generate(counters=20, days=300, start="2020-09-01", seed=0), data)
        echo(f"1. no real data found beside the project: generated synthetic counts -> {data}")
    else:
        echo(f"1. real Paris counts: {data}")
    report = ingest_file(data)
    echo("   " + "\n   ".join(report.lines()))
    echo("   " + portal_check(settings))
    weather = weather or _find_shared(_WEATHER)
    if weather is not None:
        result = ingest_weather(weather)
        echo(f"2. weather: {result['hours_stored']:,} hourly rows from {weather.name}")
    else:
        echo("2. no weather file found: models train without weather features")
    split = splits.ensure_split(settings)
    info = splits.describe(split, settings)
    echo(f"3. split v{split.version}, cutoff {split.cutoff}: train_baseline {info['train_baseline']['rows']:,} rows, "
         f"test_baseline {info['test_baseline']['rows']:,} rows ({info['test_baseline']['days']} whole days), "
         f"test_current {info['test_current']['rows']:,} rows ({info['test_current']['period']})")
    results = {}
    for model_type in ("lgbm", "rf"):
        result = train(model_type, model_test=fast, settings=settings)
        results[model_type] = result
        b, c = result.metrics_baseline, result.metrics_current or {}
        echo(f"4. trained {model_type} ({result.horizon}) in {result.train_seconds:.1f}s -> {result.registry_uri}: "
             f"test_baseline RMSE {b['rmse']:.1f} R² {b['r2']:.3f}"
             + (f"; test_current RMSE {c['rmse']:.1f} R² {c['r2']:.3f}" if c else "")
             + f" (as served: no weather forecast is stored; with the observed weather as a perfect forecast: "
               f"test_baseline RMSE {b['with_weather_rmse']:.1f})")
    day = forecast_day(store.latest_timestamp(settings))
    model = load_model("lgbm", version=results["lgbm"].model_version, settings=settings)
    forecast = predict_rows(next_day_rows(day, settings), model, settings).frame
    out = settings.reports_dir / f"demo_forecast_{day.date()}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    forecast.to_csv(out, index=False)
    totals = forecast.groupby("counter_name")["prediction"].sum().sort_values(ascending=False)
    sources = ", ".join(f"{k} {v}" for k, v in forecast["weather_source"].value_counts().items())
    echo(f"5. day-ahead forecast for {day.date()} ({len(forecast):,} counter-hours; weather: {sources}) -> {out}")
    for name, total in totals.head(5).items():
        echo(f"     {name:45s} {total:8.0f} bikes")
    from velocast.lifecycle.decisions.promotion import promote
    from velocast.lifecycle.operations.cycle import monitor_and_fine_tune
    from velocast.lifecycle.operations.simulate import simulate

    # --fast trains on samples: such a model is promoted only as an explicit, audited override
    promote("lgbm", version=results["lgbm"].model_version, force=fast, settings=settings,
            reason="demo: first champion" + (" (--fast: a sample-trained model, forced)" if fast else ""))
    echo(f"6. promoted {results['lgbm'].registry_uri} to champion (alias @champion)"
         + (" as a forced override (test-mode model)" if fast else ""))
    echo("7. weekly cycle (monitor_and_fine_tune):")
    cycle = monitor_and_fine_tune("lgbm", test_mode=fast, settings=settings,
                                  on_step=lambda s: echo(f"     {s.name:10s} {s.status:8s} {s.summary[:150]}"))
    echo(f"   -> decision {cycle.decision or '-'}; {cycle.champion_change}")
    start = (split.cutoff_timestamp - timedelta(days=7 * sim_weeks)).date()
    echo(f"8. simulation: {sim_weeks} weeks replayed from {start} (never / always retrain / policy):")
    sim = simulate(str(start), weeks=sim_weeks, test_mode=fast, settings=settings,
                   on_week=lambda w: echo(f"     week {w.week} {w.start}: RMSE never {w.rmse_never:.1f}, always "
                                          f"{w.rmse_always:.1f}, policy {w.rmse_policy:.1f}; decision "
                                          f"{w.decision or '-'}{' (promoted)' if w.promoted else ''}"))
    echo("   overall RMSE: " + ", ".join(f"{k} {v:.2f}" for k, v in sim.totals().items())
         + f"; table {sim.files['markdown']}")
    elapsed = time.perf_counter() - started
    echo(f"done in {elapsed:.0f}s. Look at:")
    for line in where_to_look(settings):
        echo(line)
    return {"results": results, "forecast": out, "seconds": elapsed}
