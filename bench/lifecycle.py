"""The weekly cycle end to end, batch prediction throughput and the drift check, on the real data.

One scratch home: the real file and weather ingested, split with the cutoff 2021-07-10 (so the
last 30 days are 'current'), a full lgbm trained and promoted.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REAL_COUNTS, REAL_WEATHER, isolated


def prepare_home(home: str) -> str:
    os.environ["VELOCAST_HOME"] = home
    from velocast.data import splits
    from velocast.data.ingest import ingest_file
    from velocast.data.weather import ingest_weather
    from velocast.lifecycle.decisions.promotion import promote
    from velocast.lifecycle.training.train import train

    ingest_file(REAL_COUNTS)
    ingest_weather(REAL_WEATHER)
    splits.record_split("2021-07-10")
    result = train("lgbm")
    promote("lgbm", version=result.model_version, reason="benchmark champion")
    return result.model_version


def cycle(home: str, strategy: str) -> dict[str, Any]:
    os.environ["VELOCAST_HOME"] = home
    from velocast.lifecycle.operations.cycle import monitor_and_fine_tune

    result = monitor_and_fine_tune("lgbm", force_fine_tune=True, strategy=strategy)
    return {"strategy": strategy, "total_seconds": result.seconds, "decision": result.decision,
            "error": result.error, "steps": {s.name: s.seconds for s in result.steps}}


def throughput(home: str) -> list[dict[str, Any]]:
    """Batch prediction of random rows of the year: the serving path, the frames' path, and the model floor.

    ``pipeline``: features from arrays + the model (``ServingModel.predict_enriched``) of rows whose
    history and weather are already there; ``frames``: the same through ``FeatureBuilder.transform``
    and the pipeline (``predict_frame``); ``floor``: LightGBM's bare ``Booster.predict`` on the same
    feature matrix; ``with_store_enrichment``: ``predict_rows`` from bare rows (history from the store).
    """
    os.environ["VELOCAST_HOME"] = home
    import numpy as np

    from velocast.data import store
    from velocast.lifecycle.inputs import enrich
    from velocast.lifecycle.serving.predict import load_model, predict_rows
    from velocast.models import predict_frame
    from velocast.models.weather_fallback import weather_known

    model = load_model("lgbm")
    serving = model.serving
    compiled = serving.model.compile_lleaves(Path(home) / "cache" / "lleaves")  # as the API does, cached on disk
    rows = store.query_counts("2020-09-01", "2021-08-10")
    out = []
    for n in (10_000, 400_000):
        batch = rows.sample(n, random_state=0, replace=n > len(rows)).reset_index(drop=True)
        enriched = enrich(batch, weather="served")
        serving.predict_enriched(enriched.head(1000))  # warm-up
        started = time.perf_counter()
        served = serving.predict_enriched(enriched)["prediction"]
        pipeline_seconds = time.perf_counter() - started
        started = time.perf_counter()
        frames = predict_frame(model.pipeline, enriched)["prediction"].to_numpy()
        frames_seconds = time.perf_counter() - started
        # the model floor: LightGBM alone on the same matrix (each row to its weather variant's booster)
        matrix = serving.plan.matrix_of(enriched)
        fallback = model.pipeline.named_steps["model"].estimator_  # the point model inside the conformal wrapper
        known = weather_known(enriched)
        kept = [i for i, c in enumerate(serving.plan.names) if c not in fallback.weather_columns]
        parts = [(fallback.with_weather_, matrix[known]), (fallback.without_weather_, matrix[~known][:, kept])]
        started = time.perf_counter()
        for estimator, X in parts:
            if len(X):
                estimator.booster_model_.booster_.predict(X, num_threads=2)
        floor_seconds = time.perf_counter() - started
        started = time.perf_counter()
        predict_rows(batch, model)
        full_seconds = time.perf_counter() - started
        out.append({"rows": n, "pipeline_rows_per_s": round(n / pipeline_seconds),
                    "frames_rows_per_s": round(n / frames_seconds),
                    "with_store_enrichment_rows_per_s": round(n / full_seconds),
                    "pipeline_seconds": round(pipeline_seconds, 3), "frames_seconds": round(frames_seconds, 3),
                    "model_floor_seconds": round(floor_seconds, 3),
                    "ratio_to_model_floor": round(pipeline_seconds / floor_seconds, 2),
                    "with_enrichment_seconds": round(full_seconds, 3), "lleaves": bool(compiled),
                    "max_abs_difference_to_frames": float(np.max(np.abs(served - frames)))})
    return out


def drift(home: str) -> dict[str, Any]:
    os.environ["VELOCAST_HOME"] = home
    import numpy as np

    from velocast.data import store
    from velocast.lifecycle.decisions.monitor import check_drift

    rows = store.query_counts("2020-09-01", "2021-08-10")
    reference = rows.sample(400_000, random_state=0, replace=len(rows) < 400_000).sort_values("timestamp")
    current = rows[rows["timestamp"] >= rows["timestamp"].max() - np.timedelta64(20, "D")].head(20_000)
    started = time.perf_counter()
    check = check_drift("lgbm", reference=reference, current=current, write=False)
    verdict_seconds = time.perf_counter() - started
    started = time.perf_counter()
    check_html = check_drift("lgbm", reference=reference, current=current, write=True)
    with_reports_seconds = time.perf_counter() - started
    return {"reference_rows": len(reference), "current_rows": len(current), "status": check.report.status,
            "verdict_seconds": round(verdict_seconds, 2), "with_html_report_seconds": round(with_reports_seconds, 2),
            "html": bool(check_html.paths.get("html"))}


def run_batch() -> list[dict[str, Any]]:
    """Only the batch-prediction figures (``--only batch``): a scratch home, the champion, ``throughput``."""
    with tempfile.TemporaryDirectory(prefix="velocast-bench-home-") as tmp:
        home = str(Path(tmp) / "home")
        _, prep_seconds, _ = isolated(prepare_home, home)
        print(f"  home ready in {prep_seconds:.0f}s", flush=True)
        batch, _, _ = isolated(throughput, home)
        print(f"  throughput: {batch}", flush=True)
    return batch


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="velocast-bench-home-") as tmp:
        home = str(Path(tmp) / "home")
        _, prep_seconds, prep_peak = isolated(prepare_home, home)
        print(f"  home ready in {prep_seconds:.0f}s (full lgbm training included, peak {prep_peak:.0f} MiB)", flush=True)
        cycles = []
        for strategy in ("sliding_window", "continue"):
            result, wall, peak = isolated(cycle, home, strategy)
            cycles.append({**result, "process_seconds": round(wall, 2), "peak_rss_mb": round(peak, 1)})
            print(f"  cycle {strategy}: {result['total_seconds']:.1f}s {result['steps']}", flush=True)
        batch, _, batch_peak = isolated(throughput, home)
        print(f"  throughput: {batch}", flush=True)
        drift_result, _, drift_peak = isolated(drift, home)
        print(f"  drift: {drift_result} peak {drift_peak:.0f} MiB", flush=True)
    return {"cycle": cycles, "batch_prediction": batch, "batch_peak_rss_mb": round(batch_peak, 1),
            "drift": {**drift_result, "peak_rss_mb": round(drift_peak, 1)}}
