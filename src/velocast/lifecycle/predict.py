"""Predictions for rows in any supported format, with history and weather from the store.

The model is the champion of its type unless a version or URI is named (``latest`` when no
champion exists yet). Unknown counters get a prediction from their location and the calendar,
plus a warning. Rows that cannot be read are reported, never silently dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from velocast.config import Settings, get_settings
from velocast.data import store
from velocast.data.ingest import read_table, validate
from velocast.lifecycle.inputs import enrich
from velocast.lifecycle.scoring import score
from velocast.models import get_spec, predict_frame
from velocast.tracking.registry import ModelRef, Registry

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model_type: str
    pipeline: Any
    ref: ModelRef | None
    uri: str

    @property
    def horizon(self) -> str:
        return self.pipeline.named_steps["features"].horizon

    @property
    def version(self) -> str | None:
        return self.ref.version if self.ref else None


@dataclass
class Predictions:
    frame: pd.DataFrame  # canonical rows + prediction (+ probability)
    model: LoadedModel
    warnings: list[str] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    unknown_counters: list[str] = field(default_factory=list)


def load_model(model_type: str = "lgbm", model_uri: str | None = None, version: str | None = None,
               horizon: str | None = None, settings: Settings | None = None) -> LoadedModel:
    """The champion of ``model_type`` (else the latest version), a named version, or a model URI."""
    import mlflow.sklearn

    get_spec(model_type)
    registry = Registry(settings)
    if model_uri:
        return LoadedModel(model_type, mlflow.sklearn.load_model(model_uri), None, model_uri)
    ref = registry.resolve(model_type, version=version)
    if horizon and ref.tags.get("horizon") != horizon:
        entries = {e.run_id: e for e in registry.summary.read()}
        matching = [r for r in registry.versions(model_type)
                    if r.tags.get("horizon") == horizon and not registry.blockers(r, entries)]
        if not matching:
            raise LookupError(f"no registered {model_type} model with horizon {horizon!r} that may serve "
                              "(test-mode and gate-failing versions never stand in for the champion)")
        ref = matching[-1]
    return LoadedModel(model_type, registry.load(ref), ref, ref.uri)


def unknown_counters_warning(unknown: list[str]) -> str:
    return (f"{len(unknown)} counter(s) unknown to the model, predicted from location and "
            f"calendar: {', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}")


def predict_rows(rows: pd.DataFrame, model: LoadedModel, settings: Settings | None = None) -> Predictions:
    """Predict canonical rows (``bike_count`` optional; when present, metrics are computed)."""
    settings = settings or get_settings()
    enriched = enrich(rows, settings)
    features = model.pipeline.named_steps["features"]
    unknown = features.unknown_counters(enriched)
    warnings = [unknown_counters_warning(unknown)] if unknown else []
    out = rows.copy()
    predicted = predict_frame(model.pipeline, enriched)
    for column in predicted.columns:
        out[column] = predicted[column].to_numpy()
    metrics = None
    labelled = enriched["bike_count"].notna() if "bike_count" in enriched else None
    if labelled is not None and labelled.any():
        metrics = score(model.pipeline, model.model_type, enriched[labelled.to_numpy()]).metrics.to_dict()
    return Predictions(out, model, warnings, metrics, unknown)


def predict_file(input_path: Path | str, output_path: Path | str, model_type: str = "lgbm",
                 model_uri: str | None = None, horizon: str | None = None,
                 settings: Settings | None = None) -> Predictions:
    """Read a file, predict every valid row, write the input columns plus ``prediction``."""
    settings = settings or get_settings()
    raw = read_table(input_path)
    checked = validate(raw, require_count=False, known_counters=store.counters(settings))
    model = load_model(model_type, model_uri, horizon=horizon, settings=settings)
    result = predict_rows(checked.accepted, model, settings)
    output = raw.frame.iloc[checked.accepted_positions].reset_index(drop=True)
    for column in ("prediction", "probability"):
        if column in result.frame:
            output[column] = result.frame[column].to_numpy()
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    if output_path.suffix.lower() in {".parquet", ".pq"}:
        output.to_parquet(output_path, index=False)
    else:
        output.to_csv(output_path, index=False)
    if not checked.rejected.empty:
        rejected_path = output_path.with_name(output_path.stem + ".rejected.csv")
        checked.rejected.to_csv(rejected_path, index=False)
        result.warnings.append(f"{len(checked.rejected)} row(s) could not be predicted; see {rejected_path}")
    return result
