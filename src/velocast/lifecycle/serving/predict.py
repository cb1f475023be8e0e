"""Predictions for rows in any supported format, with history and weather from the store.

The model is the champion of its type unless a version or URI is named (``latest`` when no
champion exists yet). Unknown counters get a prediction from their location and the calendar,
plus a warning. Rows that cannot be read are reported, never silently dropped.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from velocast import progress
from velocast.config import Settings, get_settings
from velocast.data import store
from velocast.data.ingest import RawTable, Validated, ambiguous_local_times, read_table, validate
from velocast.data.weather import WEATHER_COLUMNS
from velocast.evaluation.intervals import check_coverage
from velocast.features import paris_day_hour
from velocast.lifecycle.inputs import WEATHER_SOURCE, build_inputs, outage_flags
from velocast.lifecycle.serving.adaptation import online_rule, served_window
from velocast.lifecycle.serving.fast_path import ServedRows, fast_inputs
from velocast.lifecycle.serving.scoring import score, scored_predictions
from velocast.models import get_spec, learned_weather, predict_frame
from velocast.models.intervals import STATIC
from velocast.tracking.mlflow_runs import load_sklearn_model
from velocast.tracking.registry import LoadedModel, Registry

log = logging.getLogger(__name__)


@dataclass
class Predictions:
    rows: pd.DataFrame | ServedRows  # the rows as given to ``predict_rows``
    columns: dict[str, Any]  # per row: prediction (+ probability, or lower/upper), weather_source, notes
    model: LoadedModel
    warnings: list[str] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    unknown_counters: list[str] = field(default_factory=list)
    row_notes: list[list[str]] = field(default_factory=list)  # per row: what the forecast could not know
    coverage: float | None = None  # of every lower/upper (None: no calibrated intervals)

    @functools.cached_property
    def frame(self) -> pd.DataFrame:
        """The rows (canonical columns) with their ``columns``."""
        rows = self.rows if isinstance(self.rows, pd.DataFrame) else self.rows.frame()
        replaced = [c for c in self.columns if c in rows]
        return pd.concat([rows.drop(columns=replaced) if replaced else rows,
                          pd.DataFrame(self.columns, index=rows.index)], axis=1)


def load_model(model_type: str = "lgbm", model_uri: str | None = None, version: str | None = None,
               horizon: str | None = None, settings: Settings | None = None) -> LoadedModel:
    """The champion of ``model_type`` (else the latest version), a named version, or a model URI."""
    get_spec(model_type)
    registry = Registry(settings)
    if model_uri:
        return LoadedModel(model_type, load_sklearn_model(model_uri), None, model_uri)
    ref = registry.resolve(model_type, version=version)
    if horizon and ref.tags.get("horizon") != horizon:
        entries = {e.run_id: e for e in registry.summary.read()}
        matching = [r for r in registry.versions(model_type)
                    if r.tags.get("horizon") == horizon and not registry.blockers(r, entries)]
        if not matching:
            raise LookupError(f"no registered {model_type} model with horizon {horizon!r} that may serve "
                              "(test-mode and gate-failing versions never stand in for the champion)")
        ref = matching[-1]
    return registry.load_model(ref)


def unknown_counters_warning(unknown: list[str]) -> str:
    return (f"{len(unknown)} counter(s) unknown to the model, predicted from location and "
            f"calendar: {', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}")


def no_intervals_warning(model: LoadedModel) -> str:
    return (f"{model.uri} has no calibrated prediction intervals (made before velocast served them): lower and "
            f"upper are empty; run `velocast recalibrate --model-type {model.model_type}` to add them")


def predict_rows(rows: pd.DataFrame | ServedRows, model: LoadedModel, settings: Settings | None = None,
                 coverage: float | None = None) -> Predictions:
    """Predict canonical rows as served (``bike_count`` optional; when present, metrics are computed).

    Each row's features are built with what is known at its cut-off (``velocast.lifecycle.inputs``):
    counts before its day, the weather the row carries or the latest forecast issued by then.
    Regression forecasts carry ``lower`` and ``upper``, the prediction interval of central
    ``coverage`` (default ``VELOCAST_INTERVAL_COVERAGE``). ``row_notes`` says, per row, what was
    missing (history of the day before, weather, a sensor outage); ``warnings`` sums them up.
    """
    settings = settings or get_settings()
    coverage = check_coverage(settings.interval_coverage if coverage is None else coverage)
    serving = model.serving
    fast = fast_inputs(rows, serving, settings) if serving is not None else None
    if fast is None and isinstance(rows, ServedRows):
        rows = rows.frame()  # e.g. days before those the serving path holds in memory
    metrics, metrics_note = None, None
    day, hour, recent, adapted, rule = None, None, None, None, STATIC
    if len(rows) and model.has_intervals and online_rule(settings).window > 0:
        day, hour = (fast.day, fast.hour) if fast is not None else paris_day_hour(rows["timestamp"])
        recent, adapted = served_window(model, day, settings)  # the errors of the days before, unseen by the model
        rule = online_rule(settings) if len(recent) else STATIC
    if fast is not None:  # arrays all the way (velocast.lifecycle.serving.fast_path), proven equal to the frames' path
        predicted = serving.model.predict(fast.matrix, coverage, day, hour, recent, rule, adapted)
        weather_source, notes, unknown = fast.weather_source, fast.notes, fast.unknown_counters
    else:
        inputs = build_inputs(rows, settings)
        enriched = inputs.frame("served")
        features = model.pipeline.named_steps["features"]
        unknown = features.unknown_counters(enriched)
        labelled = enriched["bike_count"].notna().to_numpy() if "bike_count" in enriched else np.zeros(len(rows), bool)
        # labelled rows in a sensor outage are left out of the metrics and of the errors later days follow,
        # as in every score (``ServedRows``)
        outage = outage_flags(enriched, settings) & labelled if labelled.any() else labelled
        frame, regression = None, model.spec.task == "regression"
        if labelled.any() and regression and recent is not None:
            # each day follows the errors of the labelled days before it, the file's own ones included, as
            # the scores measure it (``score``): the shared cache of the store's days is not used for these
            frame = predict_frame(model.pipeline, enriched.assign(bike_count=enriched["bike_count"].where(~outage)),
                                  coverage, online_rule(settings), recent, learn_from_rows=True)
        if frame is None:
            frame = predict_frame(model.pipeline, enriched, coverage, rule, recent, adapted)
        predicted = {column: frame[column].to_numpy() for column in frame.columns}
        weather_source = enriched[WEATHER_SOURCE].to_numpy()
        uses_weather = any(c in features.feature_names_out_ for c in WEATHER_COLUMNS)
        notes = inputs.notes(model.horizon == "day-ahead", weather_source if uses_weather else None)
        scored_rows = labelled & ~outage
        if scored_rows.any():  # the metrics of the predictions written, on the same rows as every score
            scored = scored_predictions(enriched[scored_rows], frame[scored_rows], coverage,
                                        settings.coverage_tolerance) if regression else \
                score(model.pipeline, enriched[scored_rows], coverage, settings.coverage_tolerance)
            metrics = scored.to_dict()
        if outage.any():
            metrics_note = (f"{int(outage.sum())} labelled row(s) in sensor outages (runs of >= "
                            f"{settings.outage_min_zero_hours} zero hours) left out of the metrics")
    if not learned_weather(model.pipeline):  # trained without any weather: what a row gives is not used
        for position in np.flatnonzero(np.asarray(weather_source) != "missing"):
            notes[position].append(WEATHER_NOT_LEARNED_NOTE)
    # the one place where a batch of rows gets its predictions
    columns = {**predicted, WEATHER_SOURCE: weather_source, "notes": ["; ".join(n) for n in notes]}
    warnings = [unknown_counters_warning(unknown)] if unknown else []
    if model.spec.task == "regression" and not model.has_intervals:
        warnings.append(no_intervals_warning(model))
    warnings += summarise_notes(notes)
    if metrics_note:
        warnings.append(metrics_note)
    return Predictions(rows, columns, model, warnings, metrics, unknown, notes, coverage if model.has_intervals else None)


WEATHER_NOT_LEARNED_NOTE = ("weather not used: the model was trained without weather (none was in the store); "
                            "predicted by its no-weather sibling")


def summarise_notes(notes: list[list[str]]) -> list[str]:
    """One warning per kind of row note, with how many rows it concerns and the first example."""
    kinds: dict[str, list[str]] = {}
    for row in notes:
        for note in row:
            kinds.setdefault(note.split(":", 1)[0], []).append(note)
    return [f"{len(found)} row(s): {found[0]}" + (" (and similar)" if len(set(found)) > 1 else "")
            for found in kinds.values()]


@dataclass
class RowsToPredict:
    """A file of rows to predict, as read: its own columns, the accepted canonical rows, the rejected ones."""

    raw: RawTable
    checked: Validated

    @property
    def rows(self) -> pd.DataFrame:
        """Accepted canonical rows, with the weather columns the file carries (the user's forecast)."""
        rows = self.checked.accepted
        positions = np.asarray(self.checked.accepted_positions, dtype=int)
        for column in WEATHER_COLUMNS:
            if column in self.raw.frame:
                rows[column] = pd.to_numeric(self.raw.frame[column], errors="coerce").to_numpy(float)[positions]
        return rows

    @functools.cached_property
    def ambiguous_notes(self) -> list[str | None]:
        """Per accepted row: a note when its time, naive Paris time, is the repeated autumn hour."""
        column = next((raw for raw, canonical in self.raw.rename.items() if canonical == "timestamp"), None)
        positions = np.asarray(self.checked.accepted_positions, dtype=int)
        if column is None or column not in self.raw.frame or self.raw.naive_timezone == "UTC":
            return [None] * len(positions)
        values = self.raw.frame[column].iloc[positions].reset_index(drop=True)
        ambiguous = ambiguous_local_times(values, self.raw.naive_timezone)
        return [f"{column}={value!r} occurs twice in Paris (the autumn clock change) and has no offset: read as "
                "summer time (+02:00); give the offset (+02:00 or +01:00) to choose" if flag else None
                for value, flag in zip(values, ambiguous)]

    def output(self, predicted: pd.DataFrame, coverage: float | None = None) -> pd.DataFrame:
        """The file's own columns (all of them, in order) for each accepted row, plus the forecast.

        ``predicted``: the accepted rows with ``prediction`` (``probability``, or ``lower`` and
        ``upper``), ``weather_source`` and ``notes`` (``Predictions.frame``); ``coverage``: of the
        intervals, written as a column beside them.
        """
        out = self.raw.frame.iloc[self.checked.accepted_positions].reset_index(drop=True)
        out["timestamp_paris"] = [t.isoformat() for t in predicted["timestamp"]]
        for column, name in (("prediction", "prediction"), ("probability", "probability"), ("lower", "lower"),
                             ("upper", "upper"), (WEATHER_SOURCE, "weather"), ("notes", "notes")):
            if column in predicted:
                out[name] = predicted[column].to_numpy()
                if name == "upper":
                    out["coverage"] = coverage
        ambiguous = self.ambiguous_notes
        if "notes" in out and any(ambiguous):
            out["notes"] = ["; ".join(n for n in (note, extra) if n)
                            for note, extra in zip(out["notes"].fillna(""), ambiguous)]
        return out


def read_rows_to_predict(path: Path | str, settings: Settings | None = None,
                         known_counters: pd.DataFrame | None = None) -> RowsToPredict:
    """Rows of a file to predict: tidy (``counter_id`` + ``date``/``timestamp``) or open-data, counts optional.

    ``known_counters`` (default: the store's) fill in the names and coordinates of known counters.
    """
    raw = read_table(path, require_count=False)
    if known_counters is None:
        known_counters = store.counters(settings or get_settings())
    return RowsToPredict(raw, validate(raw, require_count=False, known_counters=known_counters, deduplicate=False))


def predict_file(input_path: Path | str, output_path: Path | str, model_type: str = "lgbm",
                 model_uri: str | None = None, horizon: str | None = None,
                 settings: Settings | None = None, coverage: float | None = None) -> Predictions:
    """Read a file, predict every valid row, write the input columns plus the forecast.

    Output columns: every column of the input, then ``timestamp_paris`` (the hour predicted),
    ``prediction`` (``probability`` for rf_class), ``lower`` and ``upper`` (the prediction interval
    of central ``coverage``, default ``VELOCAST_INTERVAL_COVERAGE``) and ``coverage``, ``weather``
    (where the hour's weather came from: ``given``, ``forecast`` or ``missing``) and ``notes``
    (what the forecast could not know). Rows that cannot be read go to ``<output>.rejected.csv``
    with the reason.
    """
    settings = settings or get_settings()
    progress.step(f"reading {input_path}")
    read = read_rows_to_predict(input_path, settings)
    output_path = Path(output_path)
    rejected_path = output_path.with_name(output_path.stem + ".rejected.csv")
    if read.checked.accepted.empty:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        read.checked.rejected.to_csv(rejected_path, index=False)
        reasons = ", ".join(f"{k} ({v})" for k, v in read.checked.rejected_by_reason().items())
        raise ValueError(f"no row of {input_path} can be predicted ({reasons or 'the file has no rows'}); "
                         f"each rejected row and why: {rejected_path}")
    progress.step(f"loading the {model_type} model")
    model = load_model(model_type, model_uri, horizon=horizon, settings=settings)
    progress.step(f"building the inputs as served and predicting {len(read.checked.accepted):,} rows")
    result = predict_rows(read.rows, model, settings, coverage)
    output = read.output(result.frame, result.coverage)  # rows in the repeated autumn hour say how they were read
    ambiguous = [note for note in read.ambiguous_notes if note]
    if ambiguous:
        result.warnings.append(f"{len(ambiguous)} row(s): {ambiguous[0]}")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    if output_path.suffix.lower() in {".parquet", ".pq"}:
        output.to_parquet(output_path, index=False)
    else:
        output.to_csv(output_path, index=False)
    if not read.checked.rejected.empty:
        read.checked.rejected.to_csv(rejected_path, index=False)
        result.warnings.append(f"{len(read.checked.rejected)} row(s) could not be predicted; see {rejected_path}")
    return result
