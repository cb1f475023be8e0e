"""The ``velocast`` command: a thin shell over velocast's library functions.

Imports are lazy: each command imports what it uses when it runs, so ``velocast --help`` loads
Typer and velocast's settings alone (measure with ``python -X importtime -m velocast.cli --help``).

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

import contextlib
import functools
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, Optional

import typer

from velocast import __version__
from velocast.choices import AUDIT_EVENTS, DEFAULT_DATA_SOURCE, ENVS, POLICIES, STRATEGIES
from velocast.models import (
    MODEL_TYPES,  # the family names only: velocast.models imports nothing heavy
)

log = logging.getLogger("velocast.cli")
_VERBOSE = {"on": False}

EXIT_FAILED, EXIT_INPUT, EXIT_BUSY, EXIT_DEPENDENCY, EXIT_STORAGE = 1, 2, 3, 4, 5


def _user_error(exc: BaseException) -> tuple[str, int] | None:
    """(one line, exit code) for an error the user can act on; None for a bug."""
    from velocast.errors import DependencyUnavailable, write_failure
    from velocast.lifecycle.decisions.promotion import PromotionError
    from velocast.lifecycle.operations.lease import CycleBusy

    if isinstance(exc, OSError):
        settings = _settings_or_none()
        message = write_failure(exc, settings.home) if settings is not None else None
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


def _skops_first_for(command: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command that saves or loads a model with skops imported first (``_skops_first``)."""
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        _skops_first()
        return command(*args, **kwargs)
    return run


class _Typer(typer.Typer):
    """A Typer whose commands all report user errors the same way. ``models=True``: the command
    saves or loads a model, so skops is imported before MLflow (``velocast.tracking.skops_io``)."""

    def command(self, *args: Any, models: bool = False,
                **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        register = super().command(*args, **kwargs)
        return lambda f: register(_user_errors(_skops_first_for(f) if models else f))


# plain help text (no rich rendering: importing rich's formatter costs a quarter of a second)
app = _Typer(help="velocast: hourly bike-count forecasting with a champion/challenger lifecycle.",
             no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None)
data_app = _Typer(help="Ingest, split, generate and inspect data.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")


def get_settings() -> Any:
    from velocast.config import get_settings as settings

    return settings()


def _settings_or_none() -> Any:
    """The settings, or None when a ``VELOCAST_*`` variable cannot be read (the error about it says which)."""
    try:
        return get_settings()
    except ValueError:
        return None


def install_log_redaction(*args: Any, **kwargs: Any) -> Any:
    from velocast.config import install_log_redaction as install

    return install(*args, **kwargs)


def redact(*args: Any, **kwargs: Any) -> Any:
    from velocast.config import redact as mask

    return mask(*args, **kwargs)


def redact_secrets(*args: Any, **kwargs: Any) -> Any:
    from velocast.config import redact_secrets as mask

    return mask(*args, **kwargs)


def _setup_logging(verbose: bool = False) -> None:
    level = logging.INFO if verbose else getattr(logging, get_settings().log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)
    install_log_redaction(get_settings(), loggers=("",))  # no password of a URL, no key in what we log
    sys.excepthook = _redacted_excepthook  # nor in the traceback of an error that escapes a command
    for noisy in ("mlflow", "alembic", "urllib3", "matplotlib", "numexpr", "httpx", "optuna", "streamlit"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # a retry of a dependency call is not news: its final failure is the one line the user gets
    logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO if verbose else logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
    warnings.filterwarnings("ignore", category=FutureWarning)


def _skops_first() -> None:
    """For a command that saves or loads a model: skops before MLflow (``velocast.tracking.skops_io``)."""
    from velocast.tracking.skops_io import import_skops

    import_skops()


def _redacted_excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    """Print an uncaught error like Python does, without the secrets libraries put in their messages."""
    import traceback

    text = "".join(traceback.format_exception(kind, value, tb))
    sys.stderr.write(redact_secrets(text, _settings_or_none()))


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"velocast {__version__}")
        raise typer.Exit()


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress (INFO); tracebacks of errors."),
         version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                      help="Print velocast's version and exit.")) -> None:
    _VERBOSE["on"] = verbose
    try:
        _setup_logging(verbose)  # the first read of the settings, before any command
    except ValueError as exc:  # a VELOCAST_* variable that cannot be read (config.SettingsError): one line
        if verbose:
            log.error("the settings cannot be read", exc_info=exc)
        _fail(str(exc), EXIT_INPUT)


MODEL_TYPE_HELP = "Model family."
# --model-type: a choice list from the model catalogue (an unknown family gets Click's error, exit 2)
ModelType = Literal[MODEL_TYPES]
ModelTypeOrAll = Literal[(*MODEL_TYPES, "all")]
# the other closed sets are choice lists too: an unknown value is refused before anything runs (exit 2)
Env = Literal[ENVS]
PolicyName = Literal[POLICIES]
Strategy = Literal[STRATEGIES]
JSON_HELP = "Print the result as JSON on stdout (progress and the total time stay on stderr)."
ENV_HELP = (f"{' | '.join(ENVS)}: the environment recorded with the runs and the audit row; "
            "default VELOCAST_ENV (dev).")
POLICY_HELP = " | ".join(POLICIES)
STRATEGY_HELP = " | ".join(STRATEGIES)


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {redact_secrets(message, _settings_or_none())}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


class _ProgressLines(logging.Handler):
    """Shows ``velocast.progress`` records as lines with the elapsed time (and the current one live)."""

    def __init__(self, console: Any, started: float, bar: Any = None, task: Any = None):
        super().__init__(logging.INFO)
        self.console, self.started, self.bar, self.task = console, started, bar, task

    def emit(self, record: logging.LogRecord) -> None:
        import time

        from rich.markup import escape

        message = redact_secrets(record.getMessage(), get_settings())
        elapsed = time.perf_counter() - self.started
        self.console.print(f"[dim]{elapsed:7.1f}s[/dim]  {escape(message)}", highlight=False)
        if self.bar is not None:
            done, total = getattr(record, "progress_done", None), getattr(record, "progress_total", None)
            self.bar.update(self.task, description=escape(message[:90]),
                            **({"total": total} if total else {}), **({"completed": done} if done is not None else {}))


@contextlib.contextmanager
def _working(command: str) -> Iterator[None]:
    """Progress of a long command on stderr: each library step with its elapsed time, a live line with
    a spinner and a bar on a terminal, and a closing line with the total time (stdout stays the
    command's own output)."""
    import time

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from velocast.progress import LOGGER_NAME, duration

    started = time.perf_counter()
    console = Console(stderr=True, soft_wrap=True)  # one line per step, never cut at 80 columns
    logger = logging.getLogger(LOGGER_NAME)
    saved = (logger.level, logger.propagate)
    with contextlib.ExitStack() as stack:
        bar = task = None
        if console.is_terminal:
            bar = stack.enter_context(Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                               MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                                               transient=True))
            task = bar.add_task(command, total=None)
        handler = _ProgressLines(bar.console if bar else console, started, bar, task)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # shown here, not twice with -v
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(saved[0])
            logger.propagate = saved[1]
    console.print(f"velocast {command}: done in {duration(time.perf_counter() - started)}", highlight=False)


def _echo_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, default=str))


def _paris_time(stamp: Any) -> str:
    """A stored UTC time as Europe/Paris wall-clock time (what every velocast output shows)."""
    from zoneinfo import ZoneInfo

    from velocast.config import PARIS_TZ

    return f"{stamp.astimezone(ZoneInfo(PARIS_TZ)):%Y-%m-%d %H:%M:%S}"


def _metrics_line(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "-"
    keys = ("rmse", "mae", "r2", "rmse_log1p") if "rmse" in metrics else ("auc", "f1", "precision", "recall", "accuracy")
    rows = metrics.get("n")
    line = "  ".join(f"{k}={metrics[k]:.3f}" for k in keys if metrics.get(k) is not None) + \
        (f"  (n={int(rows):,})" if rows is not None else "")
    if metrics.get("interval_coverage") is not None:
        line += (f"\n{'':17s}interval {metrics['interval_nominal']:.0%}: coverage={metrics['interval_coverage']:.3f}"
                 f"  width={metrics['interval_width']:.1f}  score={metrics['interval_score']:.1f}")
        if metrics.get("interval_worst_counter_coverage") is not None:
            line += (f"  worst counter={metrics['interval_worst_counter_coverage']:.3f}"
                     f"  counters in band={metrics['interval_counters_in_band']:.0%}")
    return line


# ------------------------------------------------------------------------------------------ data
@data_app.command("ingest")
def data_ingest(path: Path = typer.Argument(..., help="Open-data export (CSV), tidy parquet/CSV, or any table with --mapping."),
                fmt: str = typer.Option("auto", "--format", help="auto | opendata | tidy | api"),
                mapping: Optional[Path] = typer.Option(None, "--mapping", help="YAML column mapping for other tables."),
                as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Validate a counts file, quarantine bad rows, and add it to the store (idempotent)."""
    from velocast.data.ingest import ingest_file

    with _working("data ingest"):
        report = ingest_file(path, fmt, mapping)
    if as_json:
        _echo_json(report.to_dict())
    else:
        typer.echo("\n".join(report.lines()))


@data_app.command("ingest-weather")
def data_ingest_weather(path: Path = typer.Argument(..., help="Météo-France SYNOP CSV (e.g. weather_orly_synop.csv)."),
                        as_forecast: bool = typer.Option(False, "--as-forecast", help="Backtests: ALSO store these "
                                                         "observations as perfect weather forecasts, each issued at "
                                                         "00:00 Paris of its day, so forecasts of those days use "
                                                         "them (what 'with weather' scores assume).")) -> None:
    """Convert 3-hourly SYNOP observations to hourly weather and store them beside the counts.

    Observations are what models learn from and what drift is watched on; a forecast for a day
    never reads that day's observations (only weather forecasts), unless --as-forecast says to.
    """
    from velocast.data.weather import ingest_weather

    with _working("data ingest-weather"):
        result = ingest_weather(path)
        if as_forecast:
            from velocast.data.weather_forecast import ingest_observed_as_forecast

            forecast = ingest_observed_as_forecast(path)
    if as_forecast:
        typer.echo(_forecast_line(forecast))
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
    import time

    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from velocast.data.opendata import OpenDataError, fetch_counts
    from velocast.progress import duration

    started = time.perf_counter()
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      transient=True, disable=not sys.stderr.isatty()) as bar:
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
    typer.echo(f"velocast data fetch: done in {duration(time.perf_counter() - started)}", err=True)


@data_app.command("split")
def data_split(cutoff: Optional[str] = typer.Option(None, help="First day of 'current' (YYYY-MM-DD); default: last 30 days."),
               test_fraction: float = typer.Option(0.2, help="Share of baseline days held out as test_baseline."),
               seed: int = typer.Option(42, help="Seed of the held-out day choice.")) -> None:
    """Record a new baseline split (train_baseline / test_baseline / current)."""
    from velocast.data import splits

    with _working("data split"):
        record = splits.record_split(cutoff, test_fraction, seed)
    _print_split(splits.describe(record))


def _print_split(info: dict[str, Any]) -> None:
    typer.echo(f"split v{info['version']} (cutoff {info['cutoff']}):")
    for name in ("train_baseline", "test_baseline", "train_current", "test_current"):
        part = info[name]
        extra = f"{part['days']} whole days" if "days" in part else part.get("period", "")
        typer.echo(f"  {name:15s} {part['rows']:>9,} rows  {extra}")


@data_app.command("summary")
def data_summary(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """What the store holds: counters, period, rows, quarantine and splits."""
    payload = _data_summary()
    if as_json:
        _echo_json(payload)
        return
    s = payload["store"]
    if s["rows"]:
        typer.echo(f"store: {s['rows']:,} rows, {s['counters']} counters, {s['first']} .. {s['last']} (Europe/Paris)")
    else:
        typer.echo(f"store: empty (home {get_settings().home}); add counts with `velocast data ingest FILE`")
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
def data_counters(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Counters in the store with their first and last seen hours."""
    from velocast.data import store

    table = store.counters()
    if as_json:
        _echo_json(table.to_dict(orient="records"))
    else:
        typer.echo(table[["counter_id", "counter_name", "first_seen", "last_seen", "hours"]].to_string(index=False))


@data_app.command("quality")
def data_quality(since: Optional[str] = typer.Option(None, help="First day looked at (YYYY-MM-DD; default: all)."),
                 as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Broken sensors in the store: outages (runs of zero hours) and degraded days, both left out of training."""
    from velocast.data import store
    from velocast.data.quality import degraded_days, degraded_spans, outages

    settings = get_settings()
    rows = store.query_counts(start=since, settings=settings)
    names = rows[["counter_id", "counter_name"]].astype(str).drop_duplicates("counter_id")
    found = {"outages": outages(rows, settings.outage_min_zero_hours),
             "degraded": degraded_spans(degraded_days(rows, settings.degraded_day_share))}
    for key, table in found.items():
        if "counter_name" not in table:
            table = table.merge(names, on="counter_id", how="left")
        table = table.sort_values([c for c in ("counter_name", "first_hour", "first_day") if c in table])
        found[key] = table.astype({c: str for c in table.columns if c not in ("hours", "days", "median_ratio")})
    if as_json:
        _echo_json({key: table.to_dict(orient="records") for key, table in found.items()})
        return
    typer.echo(f"sensor outages (runs of >= {settings.outage_min_zero_hours} zero hours; left out of training and "
               f"scores, unknown as history): {len(found['outages'])}")
    if len(found["outages"]):
        typer.echo(found["outages"][["counter_name", "first_hour", "last_hour", "hours"]].to_string(index=False))
    typer.echo(f"degraded sensor days (total below {settings.degraded_day_share:.0%} of the counter's usual given the "
               f"city that day; left out of training): {int(found['degraded']['days'].sum()) if len(found['degraded']) else 0}"
               f" day(s) in {len(found['degraded'])} span(s)")
    if len(found["degraded"]):
        typer.echo(found["degraded"][["counter_name", "first_day", "last_day", "days", "median_ratio"]]
                   .to_string(index=False))


@data_app.command("generate")
def data_generate(counters: int = typer.Option(20, help="Number of counters."),
                  days: int = typer.Option(120, help="Number of days."),
                  start: str = typer.Option("2021-01-01", help="First day (Europe/Paris)."),
                  drift: Optional[str] = typer.Option(None, help="level_shift | new_counters | strike | seasonal"),
                  drift_start: Optional[str] = typer.Option(None, help="Day the drift starts (default: mid-period)."),
                  seed: int = typer.Option(0, help="Seed of the generator (same seed, same counts)."),
                  output: Optional[Path] = typer.Option(None, help="Also keep the tidy file here (parquet or csv)."),
                  ingest: bool = typer.Option(True, help="Ingest the generated rows into the store (--no-ingest "
                                              "needs --output)."),
                  arrive_daily: bool = typer.Option(False, "--arrive-daily",
                                                    help="Append one new day after the store's last day (simulated arrival).")) -> None:
    """Generate realistic synthetic counts (and drift scenarios) in the tidy format."""
    import tempfile

    from velocast import progress
    from velocast.data import synthetic
    from velocast.data.ingest import ingest_table, read_table

    if not ingest and output is None:
        raise ValueError("--no-ingest keeps the rows nowhere: give --output FILE")
    with _working("data generate"):
        progress.step("generating the next day" if arrive_daily else f"generating {counters} counters x {days} days")
        frame = (synthetic.next_day(seed=seed, counters=counters) if arrive_daily else
                 synthetic.generate(counters=counters, days=days, start=start, seed=seed, drift=drift,
                                    drift_start=drift_start))
        described = f"generated {len(frame):,} rows for {frame['counter_id'].nunique()} counters"
        with tempfile.TemporaryDirectory(prefix="velocast-gen-") as scratch:  # removed afterwards
            target = output or Path(scratch) / "synthetic.parquet"
            synthetic.write(frame, target)
            typer.echo(f"{described} -> {target}" if output else f"{described} (not kept as a file: --output FILE "
                                                                  "keeps one)")
            if ingest:
                progress.step(f"ingesting {len(frame):,} rows")
                source = str(output) if output else "synthetic data (generated, not kept as a file)"
                typer.echo("\n".join(ingest_table(read_table(target), source=source).lines()))


# ------------------------------------------------------------------------------------------ models
@app.command("train", models=True)
def train_cmd(model_type: ModelTypeOrAll = typer.Option("lgbm", help="Model family, or all of them."),
              data_source: str = typer.Option(DEFAULT_DATA_SOURCE, help="What to train on: reference (default: "
                                              "train_baseline + train_current, the sliding window the weekly cycle "
                                              "uses) | baseline (train_baseline of the split) | current (the first "
                                              "80% of the days after the cutoff)."),
              env: Optional[Env] = typer.Option(None, help="dev | prod: the environment recorded with the run "
                                                "(summary.json, audit); default VELOCAST_ENV (dev)."),
              model_test: bool = typer.Option(False, "--model-test", help="Quick run on a 1,000-row sample."),
              horizon: Optional[str] = typer.Option(None, help="calendar | day-ahead (default per model)."),
              hyperopt: bool = typer.Option(False, "--hyperopt", help="Tune with Optuna over time-series CV folds "
                                            "(one line per trial; early stopping and pruning keep it fast)."),
              n_trials: int = typer.Option(20, min=1, help="Optuna trials with --hyperopt."),
              timeout: Optional[float] = typer.Option(None, "--timeout", min=1, help="With --hyperopt: start no new "
                                                      "trial after this many seconds (the running ones finish)."),
              study_storage: Optional[str] = typer.Option(None, help="Optuna storage URL shared by workers."),
              study_name: Optional[str] = typer.Option(None, help="Optuna study name (with --study-storage)."),
              n_jobs_workers: int = typer.Option(1, "--n-jobs-workers", min=1,
                                                 help="Worker processes sharing the Optuna study (> 1 needs "
                                                      "--hyperopt and --study-storage)."),
              data: Optional[Path] = typer.Option(None, "--data", help="Train on this file without ingesting it."),
              hyperparams: Optional[str] = typer.Option(None, help='JSON, e.g. \'{"num_leaves": 31}\'.'),
              seed: int = typer.Option(42, help="Seed of sampling, folds and the estimator."),
              backend: str = typer.Option("auto", help="Where the fit runs: local | dask (LightGBM on a Dask "
                                          "cluster) | auto (dask for a full lgbm fit when a scheduler is set)."),
              scheduler: Optional[str] = typer.Option(None, help="Dask scheduler address (tcp://host:8786); "
                                                      "default VELOCAST_DASK_SCHEDULER."),
              as_json: bool = typer.Option(False, "--json", help="Print the results as JSON (progress stays on "
                                           "stderr).")) -> None:
    """Train, score on test_baseline/test_current, log to MLflow, register, record in summary.json."""
    from velocast.lifecycle.training.train import ALL, train_many

    types = list(ALL) if model_type == "all" else [model_type]
    try:
        params = json.loads(hyperparams) if hyperparams else None
    except json.JSONDecodeError as exc:
        raise ValueError(f"--hyperparams is not valid JSON: {exc}") from exc
    if timeout is not None and not hyperopt:
        raise ValueError("--timeout limits the Optuna search: it needs --hyperopt")
    with _working("train"):
        results = train_many(types, data_source=data_source, env=env or get_settings().env,
                             model_test=model_test, horizon=horizon, hyperparams=params, hyperopt=hyperopt,
                             n_trials=n_trials, data_path=data, seed=seed, study_storage=study_storage,
                             study_name=study_name, n_workers=n_jobs_workers, tuning_timeout=timeout,
                             backend=backend, scheduler=scheduler)
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


@app.command("predict", models=True)
def predict_cmd(rows: Optional[Path] = typer.Argument(None, show_default=False, metavar="FILE",
                                                     help="The rows to predict (or --input FILE)."),
                input: Optional[Path] = typer.Option(None, "--input", help="Rows to predict: tidy (counter_id + date "
                                                     "[naive UTC] or timestamp [with offset]) or the open-data export; "
                                                     "the count column is optional, weather columns are used as your "
                                                     "forecast, any other column is carried to the output."),
                output: Path = typer.Option(..., "--output", help="CSV or parquet: the input columns plus "
                                            "timestamp_paris, prediction, lower and upper (the prediction "
                                            "interval) and its coverage, weather (given/forecast/missing) and "
                                            "notes (what the forecast could not know)."),
                coverage: Optional[float] = typer.Option(None, "--coverage", min=0.5, max=0.99,
                                                         help="Central coverage of the lower/upper interval, "
                                                         "0.5-0.99 (default VELOCAST_INTERVAL_COVERAGE, 0.8)."),
                model_type: ModelType = typer.Option("lgbm", help="Model family whose champion (else latest version) "
                                               "predicts."),
                model_uri: Optional[str] = typer.Option(None, help="Any MLflow model URI (default: the champion). "
                                                        "Loading a model runs its code: give only URIs you trust "
                                                        "(the API never loads one a client names)."),
                horizon: Optional[str] = typer.Option(None, help="calendar | day-ahead: use the champion if it has "
                                                      "this horizon, else the latest version that has it.")) -> None:
    """Forecast each row of a file with the champion (else the latest version), as served.

    Each row is predicted as at the end of the day before it: a day-ahead model uses only the
    stored counts before the row's day (a row whose day before is missing from the store is still
    predicted, with a note saying what was missing); the weather is the row's own weather columns,
    else the latest stored weather forecast issued by then, else none. Rows that cannot be read go
    to <output>.rejected.csv with their reason. When the file carries counts, the metrics on them
    are printed.
    """
    from velocast.lifecycle.serving.predict import predict_file

    if rows is not None and input is not None and rows != input:
        raise ValueError(f"two files to predict: {rows} and --input {input}; give one")
    input = rows or input
    if input is None:
        raise ValueError("no rows to predict: give the file, e.g. `velocast predict rows.csv --output predicted.csv`")
    with _working("predict"):
        result = predict_file(input, output, model_type, model_uri, horizon, coverage=coverage)
    model = result.model
    typer.echo(f"predicted {len(result.frame):,} rows with {model.uri} ({model.horizon}) -> {output}")
    if result.coverage is not None:
        typer.echo(f"intervals: lower/upper hold {result.coverage:.0%} of the counts (calibrated, conformal)")
    sources = result.frame["weather_source"].value_counts()
    typer.echo("weather of the predicted hours: " + ", ".join(f"{k} for {v:,} row(s)" for k, v in sources.items()))
    for warning in result.warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW)
    if result.metrics:
        typer.echo(f"metrics on the given counts: {_metrics_line(result.metrics)}")


# ------------------------------------------------------------------------------------------ decisions
def _print_paired(label: str, paired: Any) -> None:
    if paired is None:
        typer.echo(f"  {label:14s} no rows")
        return
    typer.echo(f"  {label:14s} ({paired.rows:,} rows{', the same for both' if paired.champion else ''})")
    typer.echo(f"    challenger   {_metrics_line(paired.challenger)}")
    typer.echo(f"    champion     {_metrics_line(paired.champion)}")


@app.command("evaluate", models=True)
def evaluate_cmd(model_type: ModelType = typer.Option("lgbm", help=MODEL_TYPE_HELP),
                 run_id: Optional[str] = typer.Option(None, help="Registered run to evaluate (default: latest version)."),
                 version: Optional[str] = typer.Option(None, help="Registered version to evaluate."),
                 model_uri: Optional[str] = typer.Option(None, help="Any MLflow model URI (loading a model runs "
                                                         "its code: give only URIs you trust)."),
                 current: Optional[Path] = typer.Option(None, help="File of recent labelled rows used as test_current."),
                 promote_on_deploy: bool = typer.Option(False, "--promote", help="Promote the version if the policy "
                                                        "decides deploy, unless the champion changed meanwhile."),
                 policy: PolicyName = typer.Option("double_eval", help="The policy whose decision --promote follows."),
                 as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Double-evaluate a model against the champion and show what each policy would decide."""
    from velocast.evaluation.policies import Policy
    from velocast.lifecycle.decisions.evaluate import evaluate
    from velocast.tracking.registry import Registry

    if promote_on_deploy and model_uri:
        raise ValueError("--promote needs a registered version (--version or --run-id), not --model-uri")
    compared = Registry().champion(model_type) if promote_on_deploy else None  # for compare-and-swap
    with _working("evaluate"):
        outcome = evaluate(model_type, version=version, run_id=run_id, model_uri=model_uri, current_path=current,
                           policy=Policy(name=policy, r2_threshold=get_settings().r2_baseline_threshold))
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
        gates = outcome.classifier.get("gates", [])
        failed = [g for g in gates if g.get("passed") is False]
        verdict = "PASS" if outcome.classifier["passed"] else f"FAIL ({len(failed)} of {len(gates)} gates failed)"
        typer.echo(f"  classifier gates on test_baseline: {verdict}")
        for gate in gates:
            typer.echo(f"    {gate['description']}")
        typer.echo(f"  classifier report: {outcome.reports.get('html')}")
    for name, decision in outcome.decisions.items():
        typer.echo(f"policy {name:14s} -> {decision.kind}")
        for reason in decision.reasons:
            typer.echo(f"    - {reason}")
    for note in ev.notes:
        typer.echo(f"note: {note}")
    folders = sorted({str(Path(path).parent) for path in outcome.reports.values()})
    if folders:
        typer.echo(f"reports: {folders[0] if len(folders) == 1 else ', '.join(folders)}")
    if promote_on_deploy:
        typer.echo(promoted["summary"])


def _promote_after_evaluation(model_type: str, outcome: Any, policy: str, compared: Any) -> dict[str, Any]:
    """``evaluate --promote``: the decision's promotion, compare-and-swap against the champion evaluated against."""
    from velocast.lifecycle.operations.cycle import promote_if_deployed

    decision = outcome.decisions[policy]
    version = outcome.evaluation.challenger.rsplit("/", 1)[-1]
    return promote_if_deployed(model_type, version, decision.kind, decision.reasons,
                               expected_champion=compared.version if compared else None).to_dict()


@app.command("promote")
def promote_cmd(model_type: ModelType = typer.Option("lgbm", help=MODEL_TYPE_HELP),
                run_id: Optional[str] = typer.Option(None, help="Run whose registered version becomes champion."),
                version: Optional[str] = typer.Option(None, help="Registered version that becomes champion."),
                reason: str = typer.Option("", help="Why (kept in the history; required with --force)."),
                force: bool = typer.Option(False, "--force", help="Promote a test-mode or gate-failing version "
                                           "anyway (audited as an override)."),
                expected_champion: Optional[str] = typer.Option(
                    None, help="The champion version you compared against ('none': no champion); refused if "
                               "the champion changed since.")) -> None:
    """Move the champion alias to a version (audited; summary.json's flags follow)."""
    from velocast.lifecycle.decisions.promotion import expected_from_text, promote

    done = promote(model_type, version=version, run_id=run_id, reason=reason, force=force,
                   expected_champion=expected_from_text(expected_champion))
    typer.echo(f"{model_type}: champion {done.from_version or '-'} -> {done.to_version} "
               f"(previous-champion: {done.previous_alias_after or '-'})"
               + ("; it already was the champion: nothing moved" if done.from_version == done.to_version else "")
               + (f"; OVERRIDE of: {'; '.join(done.overridden)}" if done.override else ""))


@app.command("rollback")
def rollback_cmd(model_type: ModelType = typer.Option("lgbm", help=MODEL_TYPE_HELP),
                 reason: str = typer.Option("", help="Why (kept in the history; required with --force)."),
                 force: bool = typer.Option(False, "--force", help="Bring back a test-mode or gate-failing version "
                                            "anyway (audited as an override), as `promote --force` does.")) -> None:
    """Give the champion back to the champion before it (never to a version rolled back from).

    A test-mode or gate-failing version comes back only with --force --reason, as with `promote`.
    """
    from velocast.lifecycle.decisions.promotion import rollback

    done = rollback(model_type, reason=reason, force=force)
    typer.echo(f"{model_type}: champion {done.from_version} -> {done.to_version} (rolled back; previous-champion: "
               f"{done.previous_alias_after or '-'})" + (f"; OVERRIDE of: {'; '.join(done.overridden)}"
                                                        if done.override else ""))


@app.command("champion")
def champion_cmd(model_type: ModelType = typer.Option("lgbm", help=MODEL_TYPE_HELP),
                 history: bool = typer.Option(False, "--history", help="Show promotions and rollbacks."),
                 as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """The current champion of a model type (and its promotion history)."""
    from velocast.lifecycle.decisions import promotion
    from velocast.lifecycle.decisions.champion import champion_overview
    from velocast.tracking.registry import Registry

    registry = Registry()  # a read: an interrupted promotion is only reported here, undone by the next write
    undo = promotion.pending(model_type)
    found = champion_overview(registry, model_type)
    ref, previous = found.champion, found.previous_champion
    entry = registry.summary.champion(model_type)
    past = promotion.history(model_type) if history else []
    if as_json:
        _echo_json({"champion": ref.to_dict() if ref else None, "previous_champion": previous,
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
                   f"{previous or '-'}")
        typer.echo(f"  test_baseline {_metrics_line(metrics)}")
    if past:
        typer.echo("  history (Europe/Paris time, newest first):")
    for h in past:
        typer.echo(f"  {_paris_time(h.timestamp)} {h.event:9s} {h.from_version or '-':>4} -> {h.to_version:<4} "
                   f"by {h.actor}: {'; '.join(h.reasons)}")


summary_app = _Typer(help="summary.json: every run, a view derived from the registry.", rich_markup_mode=None)
app.add_typer(summary_app, name="summary")


@summary_app.callback(invoke_without_command=True)
def summary_show(context: typer.Context, as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
                 model_type: str | None = typer.Option(None, "--model-type", help="Only this model type."),
                 last: int = typer.Option(20, "--last", min=1, help="The newest N runs.")) -> None:
    """Every run in summary.json, newest last: version, horizon, test metrics, champion (`rebuild` regenerates it)."""
    if context.invoked_subcommand is not None:
        return
    from datetime import datetime

    from velocast.tracking.summary import SummaryStore

    entries = [e for e in SummaryStore().read() if model_type is None or e.model_type == model_type][-last:]
    if as_json:
        _echo_json([e.to_dict() for e in entries])
        return
    if not entries:
        typer.echo(f"no run in {redact(get_settings().summary_location)} yet: `velocast train` records one")
        return

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    typer.echo(f"{'trained (Paris time)':20s} {'model':9s} {'version':>7s} {'horizon':9s} {'env':4s} "
               f"{'test_baseline rmse':>18s} {'test_current rmse':>17s}  champion")
    for e in entries:
        flags = ("*" if e.is_champion else "") + (" test-mode" if e.test_mode else "")
        typer.echo(f"{_paris_time(datetime.fromisoformat(e.timestamp)):20s} {e.model_type:9s} {e.model_version or '-':>7s} "
                   f"{e.horizon or '-':9s} {e.env:4s} {number(e.rmse_baseline or e.rmse):>18s} "
                   f"{number(e.rmse_current):>17s}  {flags}")
    typer.echo(f"summary: {redact(get_settings().summary_location)}")


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


audit_app = _Typer(help="The append-only audit log.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(audit_app, name="audit")


@audit_app.command("list")
def audit_list(limit: int = typer.Option(20, min=1, help="Most events to show."),
               event: Optional[str] = typer.Option(None, help=f"Only this event: {' | '.join(AUDIT_EVENTS)}."),
               model_type: Optional[ModelType] = typer.Option(None, help="Only this model type."),
               as_json: bool = typer.Option(False, "--json", help="Print the events as JSON.")) -> None:
    """Latest audit events, newest first (times in Europe/Paris)."""
    from velocast.lifecycle.audit import AuditLog

    try:
        events = AuditLog().list(limit=limit, event=event, model_type=model_type)
    except ValueError as exc:
        _fail(str(exc), 2)
    if as_json:
        _echo_json([e.to_dict() for e in events])
        return
    if not events:
        filters = ", ".join(f"{k} {v}" for k, v in (("event", event), ("model type", model_type)) if v)
        typer.echo(f"no audit events{' for ' + filters if filters else ''} yet (home {get_settings().home})")
        return
    typer.echo(f"{'time (Europe/Paris)':19s} {'event':10s} {'model':9s} {'decision':20s}")
    for e in events:
        decision = e.deployment_decision or "-"
        line = f"{_paris_time(e.timestamp)} {e.event:10s} {e.model_type or '-':9s} {decision:20s}"
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
def drift_cmd(model_type: ModelType = typer.Option("lgbm", help="Whose inputs and predictions to monitor."),
              reference: Optional[Path] = typer.Option(None, help="Reference rows (default: test_baseline)."),
              current: Optional[Path] = typer.Option(None, help="Current rows (default: the store's last N days)."),
              window_days: int = typer.Option(30, min=1, help="Days of the default current window."),
              as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Drift of the champion's real inputs, target and predictions (JSON + HTML report)."""
    from velocast.lifecycle.decisions.monitor import check_drift
    from velocast.lifecycle.training.datasets import read_rows

    with _working("drift"):
        check = check_drift(model_type, read_rows(reference) if reference else None,
                            read_rows(current) if current else None, window_days)
    r = check.report
    if as_json:
        _echo_json(check.to_dict())
        return
    typer.echo(f"verdict: {r.headline.upper()} (status {r.status}; drift_detected={str(r.drift_detected).lower()})")
    for reason in r.reasons:
        typer.echo(f"  - {reason}")
    def period(p: Any) -> str:
        return f"{str(p[0])[:10]} .. {str(p[1])[:10]}" if p else "-"

    typer.echo(f"reference: {r.reference_rows:,} rows ({period(r.reference_period)}), "
               f"{r.compared_reference_rows:,} compared after seasonal matching "
               f"({'on' if r.seasonal_matching else 'off'}); current: {r.current_rows:,} rows "
               f"({period(r.current_period)}); days in Europe/Paris")
    for f in r.features:
        if not f.tested:
            typer.echo(f"  -    {f.name:20s} {f.note or 'not tested'}")
            continue
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


@app.command("cycle", models=True)
def cycle_cmd(model_type: ModelType = typer.Option("lgbm", help=MODEL_TYPE_HELP),
              force_fine_tune: bool = typer.Option(False, "--force-fine-tune", help="Fine-tune even without drift."),
              test_mode: bool = typer.Option(False, "--test-mode", help="Small samples (says what it skips)."),
              window_days: int = typer.Option(30, min=1, help="Recent days to fine-tune on (80%) and test on (20%)."),
              strategy: Strategy = typer.Option("sliding_window", help=STRATEGY_HELP),
              policy: PolicyName = typer.Option("double_eval", help=POLICY_HELP),
              env: Optional[Env] = typer.Option(None, help=ENV_HELP),
              as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """monitor_and_fine_tune: new data? → drift → health → fine-tune → double evaluation → decision → audit."""
    from velocast.lifecycle.operations.cycle import monitor_and_fine_tune

    with _working("cycle"):
        result = monitor_and_fine_tune(model_type, force_fine_tune, test_mode, window_days, strategy, policy,
                                       env=env, on_step=None if as_json else _print_step)
    if as_json:
        _echo_json(result.to_dict())
    else:
        typer.echo(f"cycle {result.cycle_id}: {result.status}; decision {result.decision or '-'}; "
                   f"{result.champion_change}")
        for reason in result.reasons:
            typer.echo(f"  - {reason}")
    if result.error:
        raise typer.Exit(1)


@app.command("recalibrate", models=True)
def recalibrate_cmd(model_type: ModelType = typer.Option("lgbm", help=MODEL_TYPE_HELP),
                    days: Optional[int] = typer.Option(None, min=3, help="Newest labelled days the champion never "
                                                       "trained on to calibrate on (default "
                                                       "VELOCAST_INTERVAL_CALIBRATION_DAYS)."),
                    as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Recalibrate the champion's prediction intervals on the newest labelled days, without retraining.

    The point model is kept; its intervals are calibrated again (conformal, as served) and
    registered as a new version that becomes the champion (`velocast rollback` undoes it); the
    audit log records a `recalibration` event with the coverage the old intervals had.
    """
    from velocast.lifecycle.decisions.recalibrate import recalibrate

    done = recalibrate(model_type, days=days)
    if as_json:
        _echo_json(done.to_dict())
        return
    typer.echo(f"{model_type}: {done.status}: {done.summary}")
    if done.to_version:
        typer.echo(f"champion {done.from_version} -> {done.to_version} (same point model, new intervals)")


@app.command("retrain", models=True)
def retrain_cmd(model_type: ModelType = typer.Option("lgbm", help=MODEL_TYPE_HELP),
                merge: bool = typer.Option(False, "--merge", help="Merge current data into a new baseline version."),
                cutoff: Optional[str] = typer.Option(None, help="Cutoff of the new baseline (default: the day after the "
                                                     "latest stored count: every stored day is merged)."),
                policy: PolicyName = typer.Option("double_eval", help=f"{POLICY_HELP}: the decision rule against the "
                                                  "champion."),
                promote_on_deploy: bool = typer.Option(False, "--promote", help="Promote if the decision is deploy."),
                test_mode: bool = typer.Option(False, "--test-mode", help="A smoke test on a sample: the new "
                                               "baseline is recorded but the old one stays active, nothing is "
                                               "promoted, env dev."),
                env: Optional[Env] = typer.Option(None, help=ENV_HELP),
                as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Quarterly retrain: new baseline version, retrain from scratch, compare on days neither model trained on."""
    from velocast.lifecycle.operations.cycle import quarterly_retrain

    with _working("retrain"):
        out = quarterly_retrain(model_type, merge, cutoff, policy, test_mode=test_mode,
                                promote_on_deploy=promote_on_deploy, env=env)
    if as_json:
        _echo_json(out)
        return
    typer.echo(f"baseline v{out['old_split']} -> v{out['new_split']} (cutoff {out['new_cutoff']}); "
               f"trained version {out['version']}; decision: {out['decision']}"
               + ("; promoted to champion" if out["promoted"] else ""))
    for reason in out["reasons"]:
        typer.echo(f"  - {reason}")


@app.command("simulate", models=True)
def simulate_cmd(start: str = typer.Option(..., help="First simulated week (the baseline is the data before it)."),
                 weeks: int = typer.Option(20, min=1, help="Weeks to replay."),
                 model_type: ModelType = typer.Option("lgbm", help="Regression model family (not rf_class)."),
                 policy: PolicyName = typer.Option("double_eval", help=POLICY_HELP),
                 strategy: Strategy = typer.Option("sliding_window", help=f"{STRATEGY_HELP}: how each week's "
                                              "challenger is trained."),
                 window_days: int = typer.Option(30, min=1, help="Recent days each weekly fine-tuning uses."),
                 test_mode: bool = typer.Option(False, "--test-mode", help="Small samples (fast, rough numbers; "
                                                "recorded as dev)."),
                 env: Optional[Env] = typer.Option(None, help=ENV_HELP)) -> None:
    """Replay stored data week by week: weekly RMSE of never / always retrain / the policy, every decision."""
    from velocast.lifecycle.operations.simulate import simulate

    header = f"{'week':>4} {'start':10s} {'never':>7} {'always':>7} {'policy':>7} {'cover':>6}  champion  decision"

    def show(w: Any) -> None:
        cover = "-" if w.coverage_policy is None else format(w.coverage_policy, ".3f")
        typer.echo(f"{w.week:>4} {w.start:10s} {w.rmse_never:7.2f} {w.rmse_always:7.2f} {w.rmse_policy:7.2f} "
                   f"{cover:>6}  v{w.champion_version:<7} {w.decision or '-'}{' (promoted)' if w.promoted else ''}"
                   + (" (not promoted: test mode)" if test_mode and w.decision == "deploy" else ""))

    with _working("simulate"):
        typer.echo(header)
        result = simulate(start, weeks, model_type, policy, window_days, strategy, test_mode, on_week=show, env=env)
    totals = result.totals()
    typer.echo("overall RMSE: " + ", ".join(f"{k} {v:.2f}" for k, v in totals.items()))
    if result.coverage() is not None:
        typer.echo(f"prediction intervals of the policy champion: coverage {result.coverage():.3f} "
                   f"(nominal {get_settings().interval_coverage:.2f})")
    typer.echo(f"table: {result.files['markdown']}   plot: {result.files['plot']}")
    typer.echo(f"simulation home (its MLflow runs and audit log): VELOCAST_HOME={result.home} velocast audit list")
    if test_mode:
        typer.echo("test mode: cycles never promote, so the policy column follows the first champion")


@app.command("serve")
def serve_cmd(host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0: every interface)."),
              port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
              workers: int = typer.Option(1, min=1, max=64, help="Worker processes sharing the port (about one per "
                                          "core; Prometheus metrics are summed over them).")) -> None:
    """Serve the HTTP API (FastAPI + uvicorn); mutating routes need VELOCAST_API_KEY."""
    import os
    import shutil
    import tempfile

    import uvicorn

    from velocast.api.config import ApiConfig
    from velocast.api.workers import APP, Workers, balanced

    settings = get_settings()
    ApiConfig.from_settings(settings)  # a VELOCAST_API_* setting that cannot be read: ValueError, one line
    typer.echo(f"velocast API on http://{host}:{port} (docs: http://{host}:{port}/docs); home {settings.home}"
               + (f"; {workers} workers" if workers > 1 else ""), err=True)
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()  # -v shows uvicorn's INFO lines
    # SIGTERM: at most a few seconds for requests in flight, then out (registry calls are bounded and
    # run in daemon threads, training jobs too: nothing holds the process)
    if workers == 1:
        _skops_first()  # the app loads the champion at start
        from velocast.api import create_app

        uvicorn.run(create_app(settings), host=host, port=port, log_level=level, log_config=None,
                    timeout_graceful_shutdown=5)
        return
    # every worker counts its requests in files of one folder that any of them sums at /metrics
    # (prometheus_client's multiprocess mode); a folder of this server alone, removed when it stops
    own = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="velocast-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    options = {"log_level": level, "log_config": None, "timeout_graceful_shutdown": 5}
    try:
        if balanced():  # one socket per worker: the kernel spreads the connections (velocast.api.workers)
            code = Workers(host, port, workers, **options).run()
            if code:
                raise typer.Exit(code)
        else:
            uvicorn.run(APP, factory=True, workers=workers, host=host, port=port, **options)
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)


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
@app.command("demo", models=True)
def demo_cmd(data: Optional[Path] = typer.Option(None, help="Counts file to use (default: the real Paris file if "
                                                          "found beside the project, else synthetic data)."),
             weather: Optional[Path] = typer.Option(None, help="SYNOP weather file (default: found beside the project)."),
             fast: bool = typer.Option(False, help="Train on samples only (seconds)."),
             weeks: int = typer.Option(3, help="Weeks of the closing simulation.")) -> None:
    """Run the main job end to end on the embedded defaults and say where to look."""
    from velocast.demo import run_demo

    with _working("demo"):
        run_demo(data, weather, fast, echo=typer.echo, sim_weeks=weeks)


def console_main() -> None:
    """The ``velocast`` command: ``app``, then the process ends without tearing its modules down.

    After a command that imported MLflow, scikit-learn and pandas (~4,000 modules), Python's
    finalisation clears and frees every module one by one: 1.5-1.9 s on this 2-core machine after the
    work is done (``velocast train --model-test``, ``velocast promote`` beside a serving API). What a
    command leaves to its exit still runs, in Python's order: non-daemon threads are waited for, the
    ``atexit`` handlers run (logging, MLflow, multiprocessing children, file locks), the standard
    streams are flushed; then ``os._exit`` with the command's exit status. An uncaught error takes
    Python's usual path (traceback, exit 1). Tests call ``app`` itself.
    """
    import atexit
    import os
    import threading

    try:
        app()
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    run_exit_functions = getattr(atexit, "_run_exitfuncs", None)
    wait_for_threads = getattr(threading, "_shutdown", None)
    if run_exit_functions is None or wait_for_threads is None:  # another Python: its own exit
        sys.exit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, status 1
        sys.stderr.write(f"{code}\n")
        code = 1
    wait_for_threads()
    run_exit_functions()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (velocast ... | head)
            pass
    os._exit(code)


if __name__ == "__main__":
    console_main()
