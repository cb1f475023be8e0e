"""The ``velocast`` command: a thin shell over velocast's library functions.

Errors have one mechanism: every command runs inside :func:`_user_errors`, which turns the errors
a user can act on into one line ``error: ...`` on stderr and an exit code (the traceback only with
``-v``); anything else is a bug and shows its (redacted) traceback.

| exit | meaning |
|---|---|
| 1 | a failed run (a cycle audited as ``error``, a drift check in error), or an unexpected error |
| 2 | bad input: unknown option value, file, version, model type; a refused promotion or rollback |
| 3 | busy: another cycle (or retrain) of that model type holds the lease |
| 4 | a dependency did not answer: MLflow, the audit database, the object store |
| 5 | VELOCAST_HOME (or a path in it) cannot be written: read-only, permission, full disk |
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

from velocast.config import get_settings, install_log_redaction, redact, redact_secrets
from velocast.errors import DependencyUnavailable, write_failure

log = logging.getLogger("velocast.cli")
_VERBOSE = {"on": False}

EXIT_FAILED, EXIT_INPUT, EXIT_BUSY, EXIT_DEPENDENCY, EXIT_STORAGE = 1, 2, 3, 4, 5


def _user_error(exc: BaseException) -> tuple[str, int] | None:
    """(one line, exit code) for an error the user can act on; None for a bug."""
    from velocast.lifecycle.lease import CycleBusy
    from velocast.lifecycle.promotion import PromotionError

    if isinstance(exc, OSError):
        message = write_failure(exc, get_settings().home)
        if message is not None:
            return message, EXIT_STORAGE
        if isinstance(exc, FileNotFoundError) and exc.filename:
            return f"file not found: {exc.filename}", EXIT_INPUT
        return None
    if isinstance(exc, CycleBusy):
        return str(exc), EXIT_BUSY
    if isinstance(exc, DependencyUnavailable):
        return str(exc), EXIT_DEPENDENCY
    if type(exc).__name__ == "MlflowException" and "API request to" in str(exc):  # a call outside the facade
        return f"mlflow unreachable: {exc}", EXIT_DEPENDENCY
    if isinstance(exc, (ValueError, LookupError, PromotionError, ImportError)) \
            and not isinstance(exc, (KeyError, IndexError)):  # those two are bugs, not the user's input
        return str(exc), EXIT_INPUT
    return None


def _user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command; a user error becomes one line and an exit code (see the module docstring)."""
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            known = _user_error(exc)
            if known is None:
                raise
            if _VERBOSE["on"]:
                log.error("%s failed", command.__name__, exc_info=exc)
            _fail(*known)
    return run


class _Typer(typer.Typer):
    """A Typer whose commands all report user errors the same way."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        register = super().command(*args, **kwargs)
        return lambda f: register(_user_errors(f))


app = _Typer(help="velocast: hourly bike-count forecasting with a champion/challenger lifecycle.",
             no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
data_app = _Typer(help="Ingest, split, generate and inspect data.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _setup_logging(verbose: bool = False) -> None:
    level = logging.INFO if verbose else getattr(logging, get_settings().log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)
    install_log_redaction(get_settings(), loggers=("",))  # no password of a URL, no key in what we log
    sys.excepthook = _redacted_excepthook  # nor in the traceback of an error that escapes a command
    for noisy in ("mlflow", "alembic", "urllib3", "matplotlib", "numexpr", "httpx", "optuna", "streamlit"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # a retry of a dependency call is not news: its final failure is the one line the user gets
    logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO if verbose else logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
    warnings.filterwarnings("ignore", category=FutureWarning)


def _redacted_excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    """Print an uncaught error like Python does, without the secrets libraries put in their messages."""
    import traceback

    text = "".join(traceback.format_exception(kind, value, tb))
    sys.stderr.write(redact_secrets(text, get_settings()))


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress (INFO); tracebacks of errors.")
         ) -> None:
    _VERBOSE["on"] = verbose
    _setup_logging(verbose)


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {redact_secrets(message, get_settings())}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _echo_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, default=str))


def _metrics_line(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "-"
    keys = ("rmse", "mae", "r2", "rmse_log1p") if "rmse" in metrics else ("auc", "f1", "precision", "recall", "accuracy")
    return "  ".join(f"{k}={metrics[k]:.3f}" for k in keys if metrics.get(k) is not None) + f"  (n={metrics.get('n')})"


# ------------------------------------------------------------------------------------------ data
@data_app.command("ingest")
def data_ingest(path: Path = typer.Argument(..., help="Open-data export (CSV), tidy parquet/CSV, or any table with --mapping."),
                fmt: str = typer.Option("auto", "--format", help="auto | opendata | tidy | api"),
                mapping: Optional[Path] = typer.Option(None, "--mapping", help="YAML column mapping for other tables."),
                as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Validate a counts file, quarantine bad rows, and add it to the store (idempotent)."""
    from velocast.data.ingest import ingest_file

    report = ingest_file(path, fmt, mapping)
    if as_json:
        _echo_json(report.to_dict())
    else:
        typer.echo("\n".join(report.lines()))


@data_app.command("ingest-weather")
def data_ingest_weather(path: Path = typer.Argument(..., help="Météo-France SYNOP CSV (e.g. weather_orly_synop.csv).")) -> None:
    """Convert 3-hourly SYNOP observations to hourly weather and store them beside the counts."""
    from velocast.data.weather import ingest_weather

    result = ingest_weather(path)
    typer.echo(f"weather: {result['observations']} observations -> {result['hours_stored']} hours stored "
               f"({result['first']} .. {result['last']}) in {result['path']}")


def _fail_fetch(exc: Exception, code: int = 1) -> None:
    """One line on stderr and a non-zero exit; the traceback too with -v."""
    if logging.getLogger().isEnabledFor(logging.INFO):
        log.info("traceback of the failure:", exc_info=exc)
    _fail(str(exc), code)


def _forecast_line(result: dict[str, Any]) -> str:
    issued = result["issued_at"] if isinstance(result["issued_at"], str) else ", ".join(result["issued_at"])
    rule = result["issued_at_rule"] if isinstance(result["issued_at_rule"], str) else "; ".join(result["issued_at_rule"])
    return (f"weather forecast: {result['hours']:,} hours ({result['first']} .. {result['last']}) issued at {issued} "
            f"({rule}): {result['added']:,} added, {result['updated']:,} updated, {result['unchanged']:,} unchanged "
            f"-> {result['path']}")


@data_app.command("ingest-weather-forecast")
def data_ingest_weather_forecast(
        path: Path = typer.Argument(..., help="JSON of one Open-Meteo forecast answer, or a list of them."),
        issued_at: Optional[str] = typer.Option(None, "--issued-at", help="When the forecast was issued (ISO with "
                                                "offset); default: the file's issued_at, else 00:00 Paris of its first day.")) -> None:
    """Store a weather forecast (Open-Meteo format) with its issue time."""
    from velocast.data.weather_forecast import WeatherForecastError, ingest_weather_forecast

    try:
        result = ingest_weather_forecast(path, issued_at=issued_at)
    except WeatherForecastError as exc:
        _fail_fetch(exc, 2)
    typer.echo(_forecast_line(result))


@data_app.command("fetch-weather-forecast")
def data_fetch_weather_forecast() -> None:
    """Fetch the weather forecast of VELOCAST_WEATHER_FORECAST_URL and store it, issued now."""
    from velocast.data.weather_forecast import WeatherForecastError, fetch_weather_forecast

    try:
        result = fetch_weather_forecast()
    except WeatherForecastError as exc:
        _fail_fetch(exc)
    typer.echo(_forecast_line(result) + f"  [{result['attempts']} attempt(s), {result['seconds']:.1f} s]")


@data_app.command("fetch")
def data_fetch(since: Optional[str] = typer.Option(None, help="First hour to fetch (date or ISO; default: the store's "
                                                   "last count per counter minus VELOCAST_OPENDATA_OVERLAP_HOURS)."),
               until: Optional[str] = typer.Option(None, help="Fetch counts strictly before this (date or ISO)."),
               fmt: str = typer.Option("csv", "--format", help="Export format asked from the portal: csv | parquet."),
               as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Fetch new hourly counts from the Paris open-data portal and ingest them (validated, idempotent)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from velocast.data.opendata import OpenDataError, fetch_counts

    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      transient=True) as bar:
            task = bar.add_task("downloading the open-data export", total=None)
            report = fetch_counts(since, until, fmt=fmt,
                                  progress=lambda done, total: bar.update(task, completed=done, total=total))
    except OpenDataError as exc:
        _fail_fetch(exc)
    except ValueError as exc:  # --since/--until that are not dates
        _fail(f"--since/--until: {exc}", 2)
    if as_json:
        _echo_json(report.to_dict())
    else:
        typer.echo("\n".join(report.lines()))


@data_app.command("split")
def data_split(cutoff: Optional[str] = typer.Option(None, help="First day of 'current' (YYYY-MM-DD); default: last 30 days."),
               test_fraction: float = typer.Option(0.2, help="Share of baseline days held out as test_baseline."),
               seed: int = typer.Option(42, help="Seed of the held-out day choice.")) -> None:
    """Record a new baseline split (train_baseline / test_baseline / current)."""
    from velocast.data import splits

    record = splits.record_split(cutoff, test_fraction, seed)
    _print_split(splits.describe(record))


def _print_split(info: dict[str, Any]) -> None:
    typer.echo(f"split v{info['version']} (cutoff {info['cutoff']}):")
    for name in ("train_baseline", "test_baseline", "train_current", "test_current"):
        part = info[name]
        extra = f"{part['days']} whole days" if "days" in part else part.get("period", "")
        typer.echo(f"  {name:15s} {part['rows']:>9,} rows  {extra}")


@data_app.command("summary")
def data_summary(as_json: bool = typer.Option(False, "--json")) -> None:
    """What the store holds: counters, period, rows, quarantine and splits."""
    payload = _data_summary()
    if as_json:
        _echo_json(payload)
        return
    s = payload["store"]
    typer.echo(f"store: {s['rows']:,} rows, {s['counters']} counters, {s['first']} .. {s['last']}")
    typer.echo(f"quarantined rows: {payload['quarantined_rows']:,} in {payload['quarantine_files']} file(s)")
    typer.echo(f"weather: {payload['weather_hours']:,} hours; weather forecasts: {payload['weather_forecast_rows']:,} "
               f"hours from {payload['weather_forecast_issues']:,} issue(s)")
    if payload["split"]:
        _print_split(payload["split"])


def _data_summary() -> dict[str, Any]:
    import pyarrow.parquet as pq

    from velocast.data import splits, store
    from velocast.data.weather import load_weather
    from velocast.data.weather_forecast import load_forecasts

    settings = get_settings()
    qfiles = sorted(settings.quarantine_dir.glob("*.parquet"))
    weather = load_weather(settings)
    forecasts = load_forecasts(settings)
    split = splits.active_split(settings)
    return {"store": store.summary(settings), "quarantine_files": len(qfiles),
            "quarantined_rows": sum(pq.ParquetFile(f).metadata.num_rows for f in qfiles),
            "weather_hours": 0 if weather is None else len(weather),
            "weather_forecast_rows": 0 if forecasts is None else len(forecasts),
            "weather_forecast_issues": 0 if forecasts is None else int(forecasts["issued_at"].nunique()),
            "split": splits.describe(split, settings) if split else None}


@data_app.command("counters")
def data_counters(as_json: bool = typer.Option(False, "--json")) -> None:
    """Counters in the store with their first and last seen hours."""
    from velocast.data import store

    table = store.counters()
    if as_json:
        _echo_json(table.to_dict(orient="records"))
    else:
        typer.echo(table[["counter_id", "counter_name", "first_seen", "last_seen", "hours"]].to_string(index=False))


@data_app.command("generate")
def data_generate(counters: int = typer.Option(20, help="Number of counters."),
                  days: int = typer.Option(120, help="Number of days."),
                  start: str = typer.Option("2021-01-01", help="First day (Europe/Paris)."),
                  drift: Optional[str] = typer.Option(None, help="level_shift | new_counters | strike | seasonal"),
                  drift_start: Optional[str] = typer.Option(None, help="Day the drift starts (default: mid-period)."),
                  seed: int = typer.Option(0),
                  output: Optional[Path] = typer.Option(None, help="Write the tidy file here (parquet or csv)."),
                  ingest: bool = typer.Option(True, help="Also ingest the generated rows into the store."),
                  arrive_daily: bool = typer.Option(False, "--arrive-daily",
                                                    help="Append one new day after the store's last day (simulated arrival).")) -> None:
    """Generate realistic synthetic counts (and drift scenarios) in the tidy format."""
    import tempfile

    from velocast.data import synthetic
    from velocast.data.ingest import ingest_file

    frame = (synthetic.next_day(seed=seed, counters=counters) if arrive_daily else
             synthetic.generate(counters=counters, days=days, start=start, seed=seed, drift=drift,
                                drift_start=drift_start))
    target = output or Path(tempfile.mkdtemp(prefix="velocast-gen-")) / "synthetic.parquet"
    synthetic.write(frame, target)
    typer.echo(f"generated {len(frame):,} rows for {frame['counter_id'].nunique()} counters -> {target}")
    if ingest:
        typer.echo("\n".join(ingest_file(target).lines()))


# ------------------------------------------------------------------------------------------ models
@app.command("train")
def train_cmd(model_type: str = typer.Option("lgbm", help="lgbm | rf | nn | rf_class | baseline | all"),
              data_source: str = typer.Option("baseline", help="baseline | current | reference"),
              env: str = typer.Option("dev", help="dev | prod"),
              model_test: bool = typer.Option(False, "--model-test", help="Quick run on a 1,000-row sample."),
              horizon: Optional[str] = typer.Option(None, help="calendar | day-ahead (default per model)."),
              hyperopt: bool = typer.Option(False, "--hyperopt", help="Tune with Optuna over time-series CV folds."),
              n_trials: int = typer.Option(20, help="Optuna trials with --hyperopt."),
              study_storage: Optional[str] = typer.Option(None, help="Optuna storage URL shared by workers."),
              study_name: Optional[str] = typer.Option(None, help="Optuna study name (with --study-storage)."),
              n_jobs_workers: int = typer.Option(1, "--n-jobs-workers", min=1,
                                                 help="Worker processes sharing the Optuna study (> 1 needs "
                                                      "--hyperopt and --study-storage)."),
              data: Optional[Path] = typer.Option(None, "--data", help="Train on this file without ingesting it."),
              hyperparams: Optional[str] = typer.Option(None, help='JSON, e.g. \'{"num_leaves": 31}\'.'),
              seed: int = typer.Option(42),
              backend: str = typer.Option("auto", help="Where the fit runs: local | dask (LightGBM on a Dask "
                                          "cluster) | auto (dask for a full lgbm fit when a scheduler is set)."),
              scheduler: Optional[str] = typer.Option(None, help="Dask scheduler address (tcp://host:8786); "
                                                      "default VELOCAST_DASK_SCHEDULER."),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Train, score on test_baseline/test_current, log to MLflow, register, record in summary.json."""
    from rich.progress import Progress

    from velocast.lifecycle.train import ALL, train_many

    types = list(ALL) if model_type == "all" else [model_type]
    try:
        params = json.loads(hyperparams) if hyperparams else None
    except json.JSONDecodeError as exc:
        raise ValueError(f"--hyperparams is not valid JSON: {exc}") from exc
    results = []
    with Progress(transient=True) as progress:
        task = progress.add_task("training", total=len(types))
        for model in types:
            progress.update(task, description=f"training {model}")
            results += train_many([model], data_source=data_source, env=env, model_test=model_test,
                                  horizon=horizon, hyperparams=params, hyperopt=hyperopt, n_trials=n_trials,
                                  data_path=data, seed=seed, study_storage=study_storage, study_name=study_name,
                                  n_workers=n_jobs_workers, backend=backend, scheduler=scheduler)
            progress.advance(task)
    if as_json:
        _echo_json([r.to_dict() for r in results])
        return
    for r in results:
        typer.echo(f"{r.model_type} ({r.horizon}) -> {r.registry_uri}  run {r.run_id}  fit {r.train_seconds:.1f}s")
        typer.echo(f"  train          {_metrics_line(r.metrics_train)}")
        typer.echo(f"  test_baseline  {_metrics_line(r.metrics_baseline)}")
        typer.echo(f"  test_current   {_metrics_line(r.metrics_current)}")
        for note in r.notes:
            typer.echo(f"  note: {note}")
    settings = get_settings()
    typer.echo(f"MLflow: mlflow ui --backend-store-uri {redact(settings.tracking_uri)}   "
               f"summary: {redact(settings.summary_location)}")


@app.command("predict")
def predict_cmd(input: Path = typer.Option(..., "--input", help="Rows to predict: tidy (counter_id + date [naive "
                                           "UTC] or timestamp [with offset]) or the open-data export; the count "
                                           "column is optional, weather columns are used as your forecast, any "
                                           "other column is carried to the output."),
                output: Path = typer.Option(..., "--output", help="CSV or parquet: the input columns plus "
                                            "timestamp_paris, prediction, weather (given/forecast/missing) and "
                                            "notes (what the forecast could not know)."),
                model_type: str = typer.Option("lgbm", help="Model family whose champion predicts."),
                model_uri: Optional[str] = typer.Option(None, help="Any MLflow model URI (default: the champion). "
                                                        "Loading a model runs its code: give only URIs you trust "
                                                        "(the API never loads one a client names)."),
                horizon: Optional[str] = typer.Option(None, help="Pick the latest model with this horizon.")) -> None:
    """Forecast the rows of a file with the champion, as served: counts before each day, weather forecasts.

    A day-ahead model reads the stored counts of the days before each row's day (a row whose day
    before is not in the store is still predicted, with a note saying what was missing). Metrics
    are printed when the file carries counts.
    """
    from velocast.lifecycle.predict import predict_file

    result = predict_file(input, output, model_type, model_uri, horizon)
    model = result.model
    typer.echo(f"predicted {len(result.frame):,} rows with {model.uri} ({model.horizon}) -> {output}")
    sources = result.frame["weather_source"].value_counts()
    typer.echo("weather: " + ", ".join(f"{k} {v:,}" for k, v in sources.items()))
    for warning in result.warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW)
    if result.metrics:
        typer.echo(f"metrics on the given counts: {_metrics_line(result.metrics)}")


# ------------------------------------------------------------------------------------------ decisions
def _print_paired(label: str, paired: Any) -> None:
    if paired is None:
        typer.echo(f"  {label:14s} no rows")
        return
    typer.echo(f"  {label:14s} ({paired.rows:,} rows, same for both)")
    typer.echo(f"    challenger   {_metrics_line(paired.challenger)}")
    typer.echo(f"    champion     {_metrics_line(paired.champion)}")


@app.command("evaluate")
def evaluate_cmd(model_type: str = typer.Option("lgbm"),
                 run_id: Optional[str] = typer.Option(None, help="Registered run to evaluate (default: latest version)."),
                 version: Optional[str] = typer.Option(None, help="Registered version to evaluate."),
                 model_uri: Optional[str] = typer.Option(None, help="Any MLflow model URI (loading a model runs "
                                                         "its code: give only URIs you trust)."),
                 current: Optional[Path] = typer.Option(None, help="File of recent labelled rows used as test_current."),
                 promote_on_deploy: bool = typer.Option(False, "--promote", help="Promote the version if the policy "
                                                        "decides deploy, unless the champion changed meanwhile."),
                 policy: str = typer.Option("double_eval", help="The policy whose decision --promote follows."),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Double-evaluate a model against the champion and show what each policy would decide."""
    from velocast.lifecycle.evaluate import evaluate
    from velocast.tracking.registry import Registry

    if promote_on_deploy and model_uri:
        raise ValueError("--promote needs a registered version (--version or --run-id), not --model-uri")
    compared = Registry().champion(model_type) if promote_on_deploy else None  # for compare-and-swap
    outcome = evaluate(model_type, version=version, run_id=run_id, model_uri=model_uri, current_path=current)
    if promote_on_deploy and policy not in outcome.decisions:
        raise ValueError(f"unknown policy {policy!r}: expected one of {', '.join(outcome.decisions)}")
    promoted = _promote_after_evaluation(model_type, outcome, policy, compared) if promote_on_deploy else None
    if as_json:
        _echo_json({**outcome.to_dict(), **({"promotion": promoted} if promote_on_deploy else {})})
        return
    ev = outcome.evaluation
    typer.echo(f"challenger: {ev.challenger}")
    typer.echo(f"champion:   {ev.champion or '(none yet)'}")
    _print_paired("test_baseline", ev.baseline)
    _print_paired("test_current", ev.current)
    if outcome.classifier:
        typer.echo(f"  classifier gates: {'PASS' if outcome.classifier['passed'] else 'FAIL'} "
                   f"(report: {outcome.reports.get('html')})")
    for name, decision in outcome.decisions.items():
        typer.echo(f"policy {name:14s} -> {decision.kind}")
        for reason in decision.reasons:
            typer.echo(f"    - {reason}")
    if promote_on_deploy:
        typer.echo(promoted["summary"])


def _promote_after_evaluation(model_type: str, outcome: Any, policy: str, compared: Any) -> dict[str, Any]:
    """``evaluate --promote``: the decision's promotion, compare-and-swap against the champion evaluated against."""
    from velocast.lifecycle.cycle import promote_if_deployed

    decision = outcome.decisions[policy]
    version = outcome.evaluation.challenger.rsplit("/", 1)[-1]
    return promote_if_deployed(model_type, version, decision.kind, decision.reasons,
                               expected_champion=compared.version if compared else None)


@app.command("promote")
def promote_cmd(model_type: str = typer.Option("lgbm"),
                run_id: Optional[str] = typer.Option(None, help="Run whose registered version becomes champion."),
                version: Optional[str] = typer.Option(None, help="Registered version that becomes champion."),
                reason: str = typer.Option("", help="Why (kept in the history; required with --force)."),
                force: bool = typer.Option(False, "--force", help="Promote a test-mode or gate-failing version "
                                           "anyway (audited as an override)."),
                expected_champion: Optional[str] = typer.Option(
                    None, help="The champion version you compared against ('none': no champion); refused if "
                               "the champion changed since.")) -> None:
    """Move the champion alias to a version (audited; summary.json's flags follow)."""
    from velocast.lifecycle.promotion import expected_from_text, promote

    done = promote(model_type, version=version, run_id=run_id, reason=reason, force=force,
                   expected_champion=expected_from_text(expected_champion))
    typer.echo(f"{model_type}: champion {done.from_version or '-'} -> {done.to_version} "
               f"(previous-champion: {done.previous_alias_after or '-'})"
               + (f"; OVERRIDE of: {'; '.join(done.overridden)}" if done.override else ""))


@app.command("rollback")
def rollback_cmd(model_type: str = typer.Option("lgbm"), reason: str = typer.Option("")) -> None:
    """Give the champion back to the champion before it (never to a version rolled back from)."""
    from velocast.lifecycle.promotion import rollback

    done = rollback(model_type, reason=reason)
    typer.echo(f"{model_type}: champion {done.from_version} -> {done.to_version} (rolled back)")


@app.command("champion")
def champion_cmd(model_type: str = typer.Option("lgbm"),
                 history: bool = typer.Option(False, "--history", help="Show promotions and rollbacks."),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """The current champion of a model type (and its promotion history)."""
    from velocast.lifecycle import promotion
    from velocast.tracking.registry import PREVIOUS, Registry

    registry = Registry()  # a read: an interrupted promotion is only reported here, undone by the next write
    undo = promotion.pending(model_type)
    ref = registry.champion(model_type, with_metrics=True)
    previous = registry.by_alias(model_type, PREVIOUS)
    entry = registry.summary.champion(model_type)
    past = promotion.history(model_type) if history else []
    if as_json:
        _echo_json({"champion": ref.to_dict() if ref else None, "previous_champion": previous.version if previous else None,
                    "summary_champion_run": entry.run_id if entry else None, "history": [h.to_dict() for h in past]})
        return
    if undo is not None:
        typer.secho(f"warning: an interrupted promotion to version {undo.from_version} awaits its undo (champion back "
                    f"to {undo.to_version or 'none'}) at the next promotion, rollback or API start",
                    fg=typer.colors.YELLOW, err=True)
    if ref is None:
        typer.echo(f"{model_type}: no champion yet")
    else:
        metrics = {k.removeprefix("test_baseline_"): v for k, v in ref.metrics.items() if k.startswith("test_baseline_")}
        typer.echo(f"{model_type}: champion {ref.uri} (run {ref.run_id}); previous-champion: "
                   f"{previous.version if previous else '-'}")
        typer.echo(f"  test_baseline {_metrics_line(metrics)}")
    for h in past:
        typer.echo(f"  {h.timestamp:%Y-%m-%d %H:%M:%S} {h.event:9s} {h.from_version or '-':>4} -> {h.to_version:<4} "
                   f"by {h.actor}: {'; '.join(h.reasons)}")


summary_app = _Typer(help="summary.json: every run, a view derived from the registry.", no_args_is_help=True)
app.add_typer(summary_app, name="summary")


@summary_app.command("rebuild")
def summary_rebuild(as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Regenerate summary.json from the registry (runs, versions, champion aliases); nothing is lost if it was deleted."""
    from dataclasses import asdict

    from velocast.tracking.rebuild import rebuild_summary

    report = rebuild_summary()
    if as_json:
        _echo_json(asdict(report))
    else:
        typer.echo("\n".join(report.lines()))
        typer.echo(f"written to {redact(get_settings().summary_location)}")


audit_app = _Typer(help="The append-only audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("list")
def audit_list(limit: int = typer.Option(20), event: Optional[str] = typer.Option(None, help="Only this event type."),
               model_type: Optional[str] = typer.Option(None), as_json: bool = typer.Option(False, "--json")) -> None:
    """Latest audit events, newest first."""
    from velocast.lifecycle.audit import AuditLog

    events = AuditLog().list(limit=limit, event=event, model_type=model_type)
    if as_json:
        _echo_json([e.to_dict() for e in events])
        return
    for e in events:
        decision = e.deployment_decision or "-"
        line = f"{e.timestamp:%Y-%m-%d %H:%M:%S} {e.event:10s} {e.model_type or '-':9s} {decision:20s}"
        if e.r2_baseline is not None:
            line += f" r2_baseline={e.r2_baseline:.3f}"
        if e.r2_current is not None:
            line += f" r2_current={e.r2_current:.3f}"
        if e.error_message:
            line += f" error={e.error_message}"
        typer.echo(line)
        for reason in e.reasons:
            typer.echo(f"      - {reason}")


# ------------------------------------------------------------------------------------------ lifecycle
@app.command("drift")
def drift_cmd(model_type: str = typer.Option("lgbm", help="Whose inputs and predictions to monitor."),
              reference: Optional[Path] = typer.Option(None, help="Reference rows (default: test_baseline)."),
              current: Optional[Path] = typer.Option(None, help="Current rows (default: the store's last N days)."),
              window_days: int = typer.Option(30, help="Days of the default current window."),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Drift of the champion's real inputs, target and predictions (JSON + HTML report)."""
    from velocast.lifecycle.datasets import read_rows
    from velocast.lifecycle.monitor import check_drift

    check = check_drift(model_type, read_rows(reference) if reference else None,
                        read_rows(current) if current else None, window_days)
    r = check.report
    if as_json:
        _echo_json(check.to_dict())
        return
    typer.echo(f"status: {r.status}   drift detected: {r.drift_detected}   share of drifted features: "
               f"{r.drift_share if r.drift_share is None else round(r.drift_share, 3)} ({r.n_drifted}/{r.n_features})")
    typer.echo(f"reference: {r.reference_rows:,} rows {r.reference_period}; current: {r.current_rows:,} rows "
               f"{r.current_period}; seasonal matching: {r.seasonal_matching}")
    for f in r.features:
        flag = "DRIFT" if f.drifted else "  ok "
        typer.echo(f"  {flag} {f.name:20s} {f.test:5s} effect={f.effect if f.effect is None else round(f.effect, 3)}"
                   f" p={f.p_value if f.p_value is None else f'{f.p_value:.2g}'}")
    for label, f in (("target", r.target_drift), ("prediction", r.prediction_drift)):
        if f is not None:
            typer.echo(f"  {'DRIFT' if f.drifted else '  ok '} {label} ({f.name}) effect={f.effect if f.effect is None else round(f.effect, 3)}")
    if r.new_counters:
        typer.echo(f"  new counters unknown to the champion: {', '.join(r.new_counters)}")
    if r.error or r.note:
        typer.echo(f"  note: {r.error or r.note}")
    for kind, path in check.paths.items():
        typer.echo(f"  report ({kind}): {path}")
    if r.status == "error":
        raise typer.Exit(1)


def _print_step(step: Any) -> None:
    mark = {"done": "✓", "skipped": "–", "failed": "✗"}.get(step.status, "?")
    typer.echo(f"{mark} {step.name:10s} {step.seconds:6.1f}s  {step.summary}")


@app.command("cycle")
def cycle_cmd(model_type: str = typer.Option("lgbm"),
              force_fine_tune: bool = typer.Option(False, "--force-fine-tune", help="Fine-tune even without drift."),
              test_mode: bool = typer.Option(False, "--test-mode", help="Small samples (says what it skips)."),
              window_days: int = typer.Option(30, help="Recent days to fine-tune on (80%) and test on (20%)."),
              strategy: str = typer.Option("sliding_window", help="sliding_window | continue"),
              policy: str = typer.Option("double_eval", help="double_eval | relative_rmse | significant"),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """monitor_and_fine_tune: new data? → drift → health → fine-tune → double evaluation → decision → audit."""
    from velocast.lifecycle.cycle import monitor_and_fine_tune

    result = monitor_and_fine_tune(model_type, force_fine_tune, test_mode, window_days, strategy, policy,
                                   on_step=None if as_json else _print_step)
    if as_json:
        _echo_json(result.to_dict())
    else:
        typer.echo(f"cycle {result.cycle_id}: {result.status}; decision {result.decision or '-'}; champion "
                   f"{result.champion_before or '-'} -> {result.champion_after or '-'}; {result.seconds:.1f}s")
        for reason in result.reasons:
            typer.echo(f"  - {reason}")
    if result.error:
        raise typer.Exit(1)


@app.command("retrain")
def retrain_cmd(model_type: str = typer.Option("lgbm"),
                merge: bool = typer.Option(False, "--merge", help="Merge current data into a new baseline version."),
                cutoff: Optional[str] = typer.Option(None, help="Cutoff of the new baseline (default: the day after the "
                                                     "latest stored count: every stored day is merged)."),
                policy: str = typer.Option("double_eval"),
                promote_on_deploy: bool = typer.Option(False, "--promote", help="Promote if the decision is deploy."),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Quarterly retrain: new baseline version, retrain from scratch, compare on days neither model trained on."""
    from velocast.lifecycle.cycle import quarterly_retrain

    out = quarterly_retrain(model_type, merge, cutoff, policy, promote_on_deploy=promote_on_deploy)
    if as_json:
        _echo_json(out)
        return
    typer.echo(f"baseline v{out['old_split']} -> v{out['new_split']} (cutoff {out['new_cutoff']}); "
               f"trained version {out['version']}; decision: {out['decision']}"
               + ("; promoted to champion" if out["promoted"] else ""))
    for reason in out["reasons"]:
        typer.echo(f"  - {reason}")


@app.command("simulate")
def simulate_cmd(start: str = typer.Option(..., help="First simulated week (the baseline is the data before it)."),
                 weeks: int = typer.Option(20), model_type: str = typer.Option("lgbm"),
                 policy: str = typer.Option("double_eval", help="double_eval | relative_rmse | significant"),
                 strategy: str = typer.Option("sliding_window"), window_days: int = typer.Option(30),
                 test_mode: bool = typer.Option(False, "--test-mode")) -> None:
    """Replay stored data week by week: weekly RMSE of never / always retrain / the policy, every decision."""
    from rich.progress import Progress

    from velocast.lifecycle.simulate import simulate

    typer.echo(f"{'week':>4} {'start':10s} {'never':>7} {'always':>7} {'policy':>7}  champion  decision")
    with Progress(transient=True) as progress:
        task = progress.add_task("simulating", total=weeks)

        def show(w: Any) -> None:
            progress.advance(task)
            progress.console.print(f"{w.week:>4} {w.start:10s} {w.rmse_never:7.2f} {w.rmse_always:7.2f} "
                                   f"{w.rmse_policy:7.2f}  v{w.champion_version:<7} {w.decision or '-'}"
                                   f"{' (promoted)' if w.promoted else ''}", highlight=False)
        result = simulate(start, weeks, model_type, policy, window_days, strategy, test_mode, on_week=show)
    totals = result.totals()
    typer.echo("overall RMSE: " + ", ".join(f"{k} {v:.2f}" for k, v in totals.items()))
    typer.echo(f"table: {result.files['markdown']}   plot: {result.files['plot']}")
    typer.echo(f"simulation home (its MLflow runs and audit log): VELOCAST_HOME={result.home} velocast audit list")


@app.command("serve")
def serve_cmd(host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0: every interface)."),
              port: int = typer.Option(8000, min=1, max=65535, help="TCP port.")) -> None:
    """Serve the HTTP API (FastAPI + uvicorn); mutating routes need VELOCAST_API_KEY."""
    import uvicorn

    from velocast.api import create_app

    settings = get_settings()
    api = create_app(settings)  # a VELOCAST_API_* setting that cannot be read: ValueError, one line
    typer.echo(f"velocast API on http://{host}:{port} (docs: http://{host}:{port}/docs); home {settings.home}",
               err=True)
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()  # -v shows uvicorn's INFO lines
    # SIGTERM: at most a few seconds for requests in flight, then out (registry calls are bounded and
    # run in daemon threads, training jobs too: nothing holds the process)
    uvicorn.run(api, host=host, port=port, log_level=level, log_config=None, timeout_graceful_shutdown=5)


@app.command("ui")
def ui_cmd(port: int = typer.Option(8501, min=1, max=65535, help="TCP port."),
           host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0: every interface).")) -> None:
    """Serve the web UI (Streamlit); it calls the API instead of the library when VELOCAST_API_URL is set."""
    # subprocess runs Streamlit: this interpreter, fixed arguments, no shell
    import os
    import signal
    import subprocess  # nosec B404

    from velocast.ui import APP_PATH

    command = [sys.executable, "-m", "streamlit", "run", str(APP_PATH), "--server.port", str(port),
               "--server.address", host, "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--client.toolbarMode", "minimal"]
    settings = get_settings()
    source = f"the API at {redact(settings.api_url)}" if settings.api_url else f"home {settings.home}"
    typer.echo(f"velocast UI on http://{host}:{port} ({source})", err=True)
    log.info("running %s", " ".join(command))
    # an argument list (no shell): sys.executable, velocast's own app file, an int port and the host option
    process = subprocess.Popen(command, env=os.environ.copy())  # nosec B603
    signal.signal(signal.SIGTERM, lambda signum, frame: process.terminate())  # stop the server with us
    try:
        code = process.wait()
    except KeyboardInterrupt:
        process.terminate()
        code = process.wait()
    if code not in (0, -signal.SIGTERM):
        raise typer.Exit(code)


# ------------------------------------------------------------------------------------------ demo
@app.command("demo")
def demo_cmd(data: Optional[Path] = typer.Option(None, help="Counts file to use (default: the real Paris file if "
                                                          "found beside the project, else synthetic data)."),
             weather: Optional[Path] = typer.Option(None, help="SYNOP weather file (default: found beside the project)."),
             fast: bool = typer.Option(False, help="Train on samples only (seconds)."),
             weeks: int = typer.Option(3, help="Weeks of the closing simulation.")) -> None:
    """Run the main job end to end on the embedded defaults and say where to look."""
    from velocast.demo import run_demo

    run_demo(data, weather, fast, echo=typer.echo, sim_weeks=weeks)


if __name__ == "__main__":
    app()
