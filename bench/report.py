"""Render bench/results/latest.json as the Markdown table the README quotes."""

from __future__ import annotations

from typing import Any


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _target(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**missed**")


def render(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    out = ["# velocast benchmarks", "",
           f"Machine: {m.get('cores')} cores, {m.get('ram_gib')} GiB RAM, {m.get('cpu')}; Python {m.get('python')}; "
           f"commit {m.get('commit')}. Sections measured: "
           + ", ".join(f"{k} {v}" for k, v in results.get("measured", {}).items()) + ".", ""]
    targets: list[tuple[str, str, bool | None]] = []
    acc = results.get("accuracy")
    if acc and not all("as_served" in r for r in acc.get("models", [])):
        out += ["## Accuracy", "", "The stored accuracy results predate as-served scoring: run "
                "`python bench/run.py --only accuracy` to measure them again.", ""]
        acc = None
    if acc:
        out += [f"## Accuracy as served (train {acc['train_period']}, score {acc['test_period']}, {acc['test_rows']:,} rows, "
                f"same rows for all)", "",
                f"Scored as served: each day's rows built at its cut-off (counts before the day, no observed weather of "
                f"the day). \"as served\": no weather forecast (none is archived for 2021), the model's no-weather "
                f"sibling predicts; \"perfect weather\": the observed weather given as a perfect forecast. "
                f"{acc.get('outage_rows', 0):,} rows in sensor outages (runs of ≥ 24 zero hours) are left out of "
                f"these scores; \"all rows\" keeps them.", "",
                "| model | RMSE as served | MAE | R² | RMSE log1p | RMSE perfect weather | RMSE all rows | RMSE / original "
                "| fit (s) | speed-up vs original | peak RSS (MiB) |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in acc["models"]:
            a, w, al = r["as_served"], r["perfect_weather"], r["all_rows"]
            out.append(f"| {r['model']} | {_f(a['rmse'])} | {_f(a['mae'])} | {_f(a['r2'], 3)} | {_f(a['rmse_log1p'], 3)} | "
                       f"{_f(w['rmse'])} | {_f(al['rmse'])} | {_f(r['rmse_ratio_to_original'], 3)} | "
                       f"{_f(r['fit_seconds'], 1)} | {_f(r['speedup_vs_original'], 1)}× | {_f(r['peak_rss_mb'], 0)} |")
        out += _intervals(acc, targets)
        tuned = next((r for r in acc["models"] if "Optuna" in r["model"]), None)
        if tuned:
            out += ["", f"Optuna: {_f(tuned['tune_seconds'], 0)} s of tuning (3 time-series folds of whole days), "
                        f"best CV RMSE {_f(tuned['cv_rmse'])}, best parameters `{tuned['best_params']}`."]
        da = next(r for r in acc["models"] if r["model"] == "lgbm, day-ahead")
        cal = next(r for r in acc["models"] if r["model"] == "lgbm, calendar")
        ref = acc.get("reference")
        if ref:
            before = ref["models"]
            out += ["", f"### Before / after (before: commit {ref['commit']}, measured with its own code on the same rows)", "",
                    "| model | RMSE as served | RMSE perfect weather | RMSE all rows | RMSE log1p as served |",
                    "|---|---:|---:|---:|---:|"]
            for name, r in before.items():
                out.append(f"| before: {name} | {_f(r['as_served']['rmse'])} | {_f(r.get('perfect_weather', {}).get('rmse'))} | "
                           f"{_f(r['all_rows']['rmse'])} | {_f(r['as_served']['rmse_log1p'], 3)} |")
            for r in (da, cal):
                out.append(f"| after: {r['model']} | {_f(r['as_served']['rmse'])} | {_f(r['perfect_weather']['rmse'])} | "
                           f"{_f(r['all_rows']['rmse'])} | {_f(r['as_served']['rmse_log1p'], 3)} |")
            no_weather = before["lgbm, day-ahead, trained without weather"]["as_served"]["rmse"]
            ratio = da["as_served"]["rmse"] / no_weather
            targets.append(("lgbm day-ahead as served ≤ 0.9 × the no-weather model of " + ref["commit"],
                            f"{_f(da['as_served']['rmse'])} / {_f(no_weather)} = {_f(ratio, 3)}", ratio <= 0.9))
        targets += [("lgbm calendar RMSE(log1p) as served < 0.40", _f(cal["as_served"]["rmse_log1p"], 3),
                     cal["as_served"]["rmse_log1p"] < 0.40),
                    ("lgbm day-ahead RMSE ≤ 0.8 × original recipe", _f(da["rmse_ratio_to_original"], 3), da["rmse_ratio_to_original"] <= 0.8),
                    ("lgbm day-ahead trains ≥ 3× faster than the original recipe", f"{_f(da['speedup_vs_original'], 1)}×", da["speedup_vs_original"] >= 3),
                    ("lgbm calendar beats the original recipe", _f(cal["rmse_ratio_to_original"], 3), cal["rmse_ratio_to_original"] < 1),
                    ("full lgbm fit < 30 s and < 2 GB peak", f"{_f(da['fit_seconds'], 1)} s, {_f(da['peak_rss_mb'], 0)} MiB",
                     da["fit_seconds"] < 30 and da["peak_rss_mb"] < 2048)]
        out.append("")
    life = results.get("lifecycle")
    if life:
        out += ["## Weekly cycle (`cycle --force-fine-tune`, 30 days of new data over the full baseline)", "",
                "| strategy | total (s) | new_data | drift | health | fine_tune | evaluate | promote | audit | decision |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for c in life.get("cycle", []):
            st = c["steps"]
            out.append(f"| {c['strategy']} | {_f(c['total_seconds'], 1)} | " + " | ".join(
                _f(st.get(k), 1) for k in ("new_data", "drift", "health", "fine_tune", "evaluate", "promote", "audit"))
                + f" | {c['decision']} |")
            targets.append((f"weekly cycle ({c['strategy']}) < 90 s", f"{_f(c['total_seconds'], 1)} s", c["total_seconds"] < 90))
        out += ["", "## Batch prediction (lgbm day-ahead champion, random rows of the year)", "",
                "Serving path: features from arrays + the model, on rows whose history and weather are given; "
                "frames: the same through `FeatureBuilder.transform` and the pipeline; model floor: LightGBM's bare "
                "`Booster.predict` on the same feature matrix (2 threads).", "",
                "| rows | serving path (rows/s) | frames (rows/s) | model floor (s) | serving / floor | with history and "
                "weather from the store (rows/s) | lleaves |", "|---:|---:|---:|---:|---:|---:|---|"]
        for b in life["batch_prediction"]:
            out.append(f"| {_f(b['rows'])} | {_f(b['pipeline_rows_per_s'])} | {_f(b.get('frames_rows_per_s'))} | "
                       f"{_f(b.get('model_floor_seconds'), 3)} | {_f(b.get('ratio_to_model_floor'))}× | "
                       f"{_f(b['with_store_enrichment_rows_per_s'])} | {b.get('lleaves', '-')} |")
        big = max(life["batch_prediction"], key=lambda b: b["rows"])
        targets.append((f"batch prediction ≥ 500,000 rows/s ({big['rows']:,} random rows of the year, features + model)",
                        _f(big["pipeline_rows_per_s"]), big["pipeline_rows_per_s"] >= 500_000))
        d = life["drift"]
        out += ["", f"## Drift check: {d['reference_rows']:,} reference × {d['current_rows']:,} current rows", "",
                f"Verdict (features, predictions, statistics): {_f(d['verdict_seconds'])} s; with the JSON and "
                f"Evidently HTML reports: {_f(d['with_html_report_seconds'])} s; peak RSS {_f(d['peak_rss_mb'], 0)} MiB.", ""]
        targets.append(("drift check < 10 s for 400k × 20k", f"{_f(d['verdict_seconds'])} s", d["verdict_seconds"] < 10))
    api = results.get("api")
    if api:
        generator = api["phases"][0].get("generator", "httpx") if api["phases"] else "httpx"
        out += [f"## API under load (uvicorn on 127.0.0.1, {api.get('workers', 1)} worker(s), 16 concurrent clients, "
                f"load from {'`wrk` (C, one thread)' if generator == 'wrk' else 'httpx (Python, same 2 cores)'})", "",
                "| phase | requests | req/s | p50 (ms) | p95 (ms) | p99 (ms) | p99 / `/health` p99 | errors |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        ratios = api.get("p99_ratio_to_health", {})
        for p in api["phases"]:
            out.append(f"| {p['name']} | {_f(p['requests'])} | {_f(p['rps'], 1)} | {_f(p['p50_ms'], 1)} | {_f(p['p95_ms'], 1)} | "
                       f"{_f(p['p99_ms'], 1)} | {_f(ratios.get(p['name']))} | {_f(p['errors'])} |")
        compiled = api.get("compiled_after_seconds")
        out += ["", "Phases start once the champion is compiled with lleaves (the server idle after the warm-up: "
                    f"{_f(compiled, 1)} s)." if compiled is not None else
                "Phases start after the warm-up (champion compiled with lleaves: not waited for, or lleaves missing)."]
        single = next((p for p in api["phases"] if p["name"] == "1 record"), None)
        hundred = next((p for p in api["phases"] if p["name"] == "100 records"), None)
        swap = next((p for p in api["phases"] if "promotion" in p["name"]), None)
        if single:
            targets.append(("single-record /predict p99 ≤ 20 ms at 16 clients", f"{_f(single['p99_ms'], 1)} ms",
                            single["p99_ms"] <= 20))
            if "1 record" in ratios:
                targets.append(("single-record /predict p99 ≤ 2× /health p99 (same run)", f"{_f(ratios['1 record'])}×",
                                ratios["1 record"] <= 2))
        if hundred:
            targets.append(("100-record /predict p99 ≤ 60 ms", f"{_f(hundred['p99_ms'], 1)} ms", hundred["p99_ms"] <= 60))
        if swap:
            targets.append(("0 errors across a promotion", _f(swap["errors"]), swap["errors"] == 0))
            targets.append(("single-record /predict p99 ≤ 20 ms across a promotion", f"{_f(swap['p99_ms'], 1)} ms",
                            swap["p99_ms"] <= 20))
            promotion = api.get("promotion") or {}
            if promotion:
                served = ", ".join(promotion.get("served_after") or []) or "none"
                swapped = promotion.get("every_worker_swapped_after_seconds")
                out += ["", f"Promotion mid-run: `velocast promote --version 2` took {_f(promotion.get('seconds'), 1)} s "
                            f"(exit code {promotion.get('returncode')}) on the same 2 cores; the workers kept serving "
                            "version 1 (compiled) while version 2's trees compiled with lleaves, then `/predict` answered "
                            f"with version(s) {served}"
                            + (f", every worker {_f(swapped, 1)} s after the promotion started." if swapped is not None
                               else " at the end of the wait.")]
                targets.append(("the promotion is served by every worker", served, promotion.get("served_after") == ["2"]))
        out.append("")
    cmds = results.get("commands")
    if cmds:
        out += ["## Commands", "", "| command | wall (s) | peak RSS (MiB) |", "|---|---:|---:|"]
        for key, c in cmds.items():
            out.append(f"| `{c['command']}` | {_f(c['seconds'], 1)} | {_f(c['peak_rss_mb'], 0)} |")
        targets.append(("`train --model-test` end to end ≤ 6 s", f"{_f(cmds['train_model_test']['seconds'], 1)} s",
                        cmds["train_model_test"]["seconds"] <= 6))
        if "help" in cmds:
            targets.append(("`velocast --help` ≤ 1 s", f"{_f(cmds['help']['seconds'], 2)} s", cmds["help"]["seconds"] <= 1))
        out.append("")
    growth = results.get("growth")
    if growth:
        out += _growth(growth)
    parity = results.get("dask_parity")
    if parity:
        out += _dask_parity(parity, targets)
    if targets:
        out += ["## Targets", "", "| target | measured | |", "|---|---|---|"]
        out += [f"| {name} | {value} | {_target(ok)} |" for name, value, ok in targets]
        out.append("")
    return "\n".join(out)


def _dask_parity(parity: dict[str, Any], targets: list[tuple[str, str, bool | None]]) -> list[str]:
    out = [f"## Dask training vs one process ({parity['model']}, {parity['workers']} workers)", "",
           f"Train {parity['train']}; test {parity['test']}.", "",
           "| seed | one process RMSE | Dask RMSE | one process fit (s) | Dask fit (s, with the enrichment) |",
           "|---:|---:|---:|---:|---:|"]
    out += [f"| {f['seed']} | {f['single_rmse']:.3f} | {f['dask_rmse']:.3f} | {f['single_fit_seconds']} | "
            f"{f['dask_fit_seconds']} |" for f in parity["fits"]]
    difference = parity["relative_difference"]
    mean = (f"Mean RMSE: one process {parity['single_mean_rmse']:.3f}, Dask {parity['dask_mean_rmse']:.3f} "
            f"({difference:+.1%}).")
    out += ["", mean, ""]
    targets.append(("Dask fit within 2% RMSE of one process (mean over seeds)", f"{difference:+.1%}",
                    difference <= 0.02))
    return out


def _intervals(acc: dict[str, Any], targets: list[tuple[str, str, bool | None]]) -> list[str]:
    """The prediction-interval table of the accuracy section, and its targets."""
    rows = [(r["model"], variant, r[variant]["intervals"]) for r in acc["models"]
            for variant in ("as_served", "perfect_weather") if r[variant].get("intervals")]
    if not rows:
        return []
    nominal = acc.get("interval_coverage", 0.8)
    out = ["", f"### Prediction intervals ({nominal:.0%}, conformal, calibrated on the last "
               f"{acc.get('calibration_days')} training days by a twin fitted on the days before them)", "",
           "Naive baseline: the prediction plus the empirical 10% / 90% quantiles of the residuals (bikes) of the "
           "same hour of the day on the same calibration days. Counters: those seen on ≥ 14 test days; band "
           "0.70-0.90.", "",
           "| model | weather | coverage | mean width | interval score | worst counter | best counter "
           "| counters in band | naive coverage | naive width | naive score | naive counters in band "
           "| width / naive | naive width at the same coverage | width / that |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for model, variant, i in rows:
        m, n = i["model"], i["naive"]
        out.append(f"| {model} | {variant.replace('_', ' ')} | {_f(m['interval_coverage'], 3)} | "
                   f"{_f(m['interval_width'], 1)} | {_f(m['interval_score'], 1)} | "
                   f"{_f(m['interval_worst_counter_coverage'], 3)} | {_f(m.get('counter_coverage_max'), 3)} | "
                   f"{_f(m['interval_counters_in_band'] * 100, 0)}% | {_f(n['interval_coverage'], 3)} | "
                   f"{_f(n['interval_width'], 1)} | {_f(n['interval_score'], 1)} | "
                   f"{_f(n['interval_counters_in_band'] * 100, 0)}% | {_f(i['width_ratio_to_naive'], 3)} | "
                   f"{_f(i.get('naive_same_coverage', {}).get('interval_width'), 1)} | "
                   f"{_f(i.get('width_ratio_to_naive_same_coverage'), 3)} |")
    main = next((i for model, variant, i in rows if model == "lgbm, day-ahead" and variant == "as_served"), None)
    if main:
        m = main["model"]
        targets += [
            ("lgbm day-ahead 80% interval coverage as served within 0.77-0.83", _f(m["interval_coverage"], 3),
             0.77 <= m["interval_coverage"] <= 0.83),
            ("every counter (≥ 14 days) covered within 0.70-0.90",
             f"{_f(m['interval_worst_counter_coverage'], 3)} .. {_f(m.get('counter_coverage_max'), 3)}",
             m["interval_counters_in_band"] == 1.0),
            ("mean width ≥ 15% narrower than the naive per-hour intervals at the same coverage",
             f"{_f(main.get('width_ratio_to_naive_same_coverage'), 3)} ×",
             main.get("width_ratio_to_naive_same_coverage", 1.0) <= 0.85)]
    return out


def _growth(growth: dict[str, Any]) -> list[str]:
    out = [f"## Growth: more counters, same period ({growth['period']}; {growth['model']})", "",
           ("| size | counters | train rows | ingest (s) | enrich (s) | fit (s, best of runs) | fit CPU (s) | "
            "fit peak RSS (MiB) | predict (rows/s) | drift check (s) | drift rows (ref × cur) |"),
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for g in growth["sizes"]:
        if "train_rows" not in g:  # the single-process steps were skipped or failed: see the notes below
            out.append(f"| {g['factor']}× | {_f(g['counters'])} | - | {_f(g.get('ingest_seconds'), 1)} | "
                       f"{_f(g.get('enrich_seconds'), 1)} | - | - | - | - | - | - |")
            continue
        out.append(f"| {g['factor']}× | {_f(g['counters'])} | {_f(g['train_rows'])} | {_f(g['ingest_seconds'], 1)} | "
                   f"{_f(g['enrich_seconds'], 1)} | {_f(g['fit_seconds'], 1)} | {_f(g.get('fit_cpu_seconds'), 1)} | "
                   f"{_f(g['fit_peak_rss_mb'], 0)} | "
                   f"{_f(g['predict_rows_per_s'])} | {_f(g['drift_seconds'])} | "
                   f"{_f(g['drift_reference_rows'])} × {_f(g['drift_current_rows'])} |")
    out += _growth_scale_out(growth)
    out += ["", "Rows per year for N counters (N × 8,760 hours): "
            + ", ".join(f"{int(n):,} counters → {rows:,}" for n, rows in growth["rows_per_year"].items()) + "."]
    if growth.get("load_average_before"):
        out.append(f"Load average (1, 5, 15 min) before / after: {growth['load_average_before']} / "
                   f"{growth.get('load_average_after')} — other work on the machine slows every timing."
                   + (f" `OMP_WAIT_POLICY`: {growth['omp_wait_policy']}." if "omp_wait_policy" in growth else ""))
    out.append("")
    return out


def _mib_list(values: list[float] | None) -> str:
    return " / ".join(_f(v, 0) for v in values) if values else "-"


def _growth_scale_out(growth: dict[str, Any]) -> list[str]:
    """The store kinds and the Dask fit of each size (runs before these figures existed have none)."""
    sizes = growth["sizes"]
    keys = ("delta_ingest_seconds", "dask_fit_seconds", "skipped", "failed")
    if not any(k in g for g in sizes for k in keys):
        return []
    out = ["", f"### Growth: the counts' ingest per store kind, and the fit on Dask ({growth.get('dask', 'Dask')})", "",
           ("Ingest: the counts file alone into an empty store (Parquet: the peak RSS of the prepare process "
            "right after it). Dask fit: one attempt, including the workers' enrichment of their rows (the "
            "single-process fit reads rows enriched beforehand: compare with enrich + fit above). RMSE: "
            "counts of the same test rows (observed weather), both models with the same hyper-parameters and seed."),
           "",
           ("| size | train rows | Parquet ingest (s) | Parquet ingest peak (MiB) | Parquet on disk (MiB) "
            "| Delta ingest (s) | Delta ingest peak (MiB) | Delta on disk (MiB) | single fit (s) | Dask fit (s) "
            "| Dask workers CPU (s) | peak RSS per Dask worker (MiB) | Dask client peak (MiB) "
            "| RMSE single | RMSE Dask | Dask / single |"),
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    notes = []
    for g in sizes:
        out.append(f"| {g['factor']}× | {_f(g.get('train_rows', g.get('prepared_train_rows')))} | "
                   f"{_f(g.get('ingest_counts_seconds'), 1)} | {_f(g.get('ingest_peak_rss_mb'), 0)} | "
                   f"{_f(g.get('parquet_store_mb'), 1)} | {_f(g.get('delta_ingest_seconds'), 1)} | "
                   f"{_f(g.get('delta_ingest_peak_rss_mb'), 0)} | {_f(g.get('delta_store_mb'), 1)} | "
                   f"{_f(g.get('fit_seconds'), 1)} | {_f(g.get('dask_fit_seconds'), 1)} | "
                   f"{_f(g.get('dask_worker_cpu_seconds'), 1)} | {_mib_list(g.get('dask_worker_peak_rss_mb'))} | "
                   f"{_f(g.get('dask_client_peak_rss_mb'), 0)} | {_f(g.get('single_rmse'))} | "
                   f"{_f(g.get('dask_rmse'))} | {_f(g.get('dask_rmse_ratio'), 3)} |")
        notes += [f"- {g['factor']}×: {step} skipped: {reason}." for step, reason in g.get("skipped", {}).items()]
        notes += [f"- {g['factor']}×: {step} failed: `{reason}`." for step, reason in g.get("failed", {}).items()]
    if notes:
        out += ["", *notes]
    limits = next((g["dask_worker_memory_limit_mb"] for g in sizes if g.get("dask_worker_memory_limit_mb")), None)
    if limits:
        out += ["", (f"Dask workers' memory limit (the `LocalCluster` default, RAM / workers): "
                     f"{_mib_list(limits)} MiB each; steps estimated above {growth.get('memory_limit_gib', 20):g} GiB "
                     f"(the Dask fit: client and workers together) are skipped.")]
    return out
