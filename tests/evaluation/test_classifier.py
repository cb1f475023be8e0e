"""Tests of the affluence-classifier validation suite (velocast.evaluation.classifier)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from velocast.evaluation.classifier import (
    PLOT_FILES,
    ClassifierGates,
    ClassifierValidation,
    GateResult,
    expected_calibration_error,
    plot_classifier,
    time_fold_aucs,
    validate_classifier,
    write_report,
)

PARIS_COUNTS = Path("/work/shared/data/paris/counts_2020-09-01_2021-08-09.parquet")

METRIC_KEYS = [
    "n",
    "positive_rate",
    "auc",
    "average_precision",
    "brier",
    "log_loss",
    "ece",
    "calibration_slope",
    "calibration_intercept",
    "f1_optimal_threshold",
    "f1_at_optimal",
    "precision_at_07",
    "recall_at_07",
    "cv_auc_mean",
    "cv_auc_std",
]
GATE_NAMES = ["auc", "precision_at_07", "ece", "cv_auc_std"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1.0 - p))


@pytest.fixture(scope="module")
def calibrated() -> tuple[np.ndarray, np.ndarray]:
    """y ~ Bernoulli(p) with seeded p: calibrated by construction (n = 20 000)."""
    rng = np.random.default_rng(42)
    p = rng.uniform(0.01, 0.99, size=20_000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    return y, p


@pytest.fixture(scope="module")
def separable() -> tuple[np.ndarray, np.ndarray]:
    y = np.array([0] * 50 + [1] * 50)
    p = np.concatenate([np.linspace(0.0, 0.05, 50), np.linspace(0.95, 1.0, 50)])
    return y, p


def _gate(v: ClassifierValidation, name: str) -> GateResult:
    return next(g for g in v.gates if g.name == name)


# ---------------------------------------------------------------------------- metrics


def test_perfect_separation_auc_one_and_passes_auc_gate(separable):
    y, p = separable
    v = validate_classifier(y, p)
    assert v.auc == pytest.approx(1.0)
    assert v.average_precision == pytest.approx(1.0)
    assert _gate(v, "auc").passed is True
    assert _gate(v, "auc").status == "PASS"
    assert v.precision_at_07 == pytest.approx(1.0)
    assert v.recall_at_07 == pytest.approx(1.0)
    assert v.f1_at_optimal == pytest.approx(1.0)
    # F1-optimal threshold is the lowest positive score (predict positive when proba >= t)
    assert v.f1_optimal_threshold == pytest.approx(0.95)
    assert v.ece == pytest.approx(0.025)
    assert v.n == 100 and v.positive_rate == pytest.approx(0.5)
    assert np.isfinite(v.calibration_slope) and v.calibration_slope > 1


def test_well_calibrated_case(calibrated):
    y, p = calibrated
    v = validate_classifier(y, p)
    assert v.ece < 0.03
    assert abs(v.calibration_slope - 1.0) < 0.1
    assert abs(v.calibration_intercept) < 0.1
    # Brier of a calibrated uniform-p model: E[p(1-p)] ~ 1/6
    assert v.brier == pytest.approx(1 / 6, abs=0.01)
    assert _gate(v, "ece").passed is True


def test_over_confident_case_has_slope_below_one_and_higher_ece(calibrated):
    y, p = calibrated
    good = validate_classifier(y, p)
    # push probabilities towards 0/1: logit multiplied by 3
    over = validate_classifier(y, _sigmoid(3.0 * _logit(p)))
    assert over.calibration_slope < 1.0
    assert over.calibration_slope == pytest.approx(1 / 3, abs=0.05)
    assert over.ece > good.ece + 0.05
    assert over.log_loss > good.log_loss
    # a monotone transform does not change ranking metrics
    assert over.auc == pytest.approx(good.auc)


def test_under_confident_case_has_slope_above_one(calibrated):
    y, p = calibrated
    under = validate_classifier(y, _sigmoid(0.5 * _logit(p)))
    assert under.calibration_slope == pytest.approx(2.0, abs=0.2)


def test_ece_matches_hand_computation():
    # bins [0, .1], (.1, .2], ... as in sklearn's calibration_curve (uniform strategy)
    y = np.array([0, 1, 0, 1, 1, 1])
    p = np.array([0.05, 0.05, 0.55, 0.55, 0.95, 0.95])
    # bin 0: mean p .05 vs y .5 -> .45 ; bin 5: .55 vs .5 -> .05 ; bin 9: .95 vs 1 -> .05
    expected = (2 * 0.45 + 2 * 0.05 + 2 * 0.05) / 6
    assert expected_calibration_error(y, p) == pytest.approx(expected)
    assert validate_classifier(y, p).ece == pytest.approx(expected)


def test_precision_recall_at_07_match_sklearn(calibrated):
    y, p = calibrated
    v = validate_classifier(y, p)
    pred = (p >= 0.7).astype(int)
    assert v.precision_at_07 == pytest.approx(precision_score(y, pred))
    assert v.recall_at_07 == pytest.approx(recall_score(y, pred))


def test_precision_at_07_is_zero_when_nothing_is_flagged():
    v = validate_classifier([0, 1, 0, 1], [0.1, 0.6, 0.2, 0.65])
    assert v.precision_at_07 == 0.0 and v.recall_at_07 == 0.0
    assert _gate(v, "precision_at_07").status == "FAIL"


def test_f1_optimal_threshold_beats_half(calibrated):
    y, p = calibrated
    v = validate_classifier(y, p)
    f1_half = f1_score(y, (p >= 0.5).astype(int))
    assert v.f1_at_optimal >= f1_half
    assert v.f1_at_optimal == pytest.approx(f1_score(y, (p >= v.f1_optimal_threshold).astype(int)))
    assert 0.0 <= v.f1_optimal_threshold <= 1.0


def test_cv_metrics_from_fold_aucs(separable):
    y, p = separable
    folds = [0.90, 0.88, 0.92, 0.91, 0.89]
    v = validate_classifier(y, p, fold_aucs=folds)
    assert v.cv_auc_mean == pytest.approx(np.mean(folds))
    assert v.cv_auc_std == pytest.approx(np.std(folds))
    assert _gate(v, "cv_auc_std").status == "PASS"
    unstable = validate_classifier(y, p, fold_aucs=[0.95, 0.70, 0.90, 0.60])
    assert _gate(unstable, "cv_auc_std").status == "FAIL"
    assert unstable.passed is False


# ---------------------------------------------------------------------------- gates


def test_failing_precision_gate_reported_fail(calibrated):
    y, p = calibrated
    # strictly harder gate than the model's precision@0.7 (~0.85)
    v = validate_classifier(
        y, p, fold_aucs=[0.8, 0.8], gates=ClassifierGates(min_auc=0.5, min_precision_at_07=0.95)
    )
    gate = _gate(v, "precision_at_07")
    assert gate.passed is False and gate.status == "FAIL"
    assert gate.operator == ">=" and gate.threshold == pytest.approx(0.95)
    assert gate.value == pytest.approx(v.precision_at_07)
    assert v.passed is False
    assert v.failed_gates == ["precision_at_07"]
    assert "FAIL" in v.text_report()


def test_noisy_scores_fail_precision_with_default_gates():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=2000)
    p = np.clip(0.5 + 0.1 * (y - 0.5) + rng.normal(0, 0.2, size=y.size), 0, 1)
    v = validate_classifier(y, p)
    assert v.precision_at_07 < 0.8
    assert _gate(v, "precision_at_07").status == "FAIL"
    assert _gate(v, "auc").status == "FAIL"
    assert v.passed is False


@pytest.mark.parametrize("folds", [None, [], [0.9]])
def test_cv_gate_not_evaluated_without_folds(separable, folds):
    y, p = separable
    v = validate_classifier(y, p, fold_aucs=folds)
    assert v.cv_auc_std is None
    gate = _gate(v, "cv_auc_std")
    assert gate.passed is None and gate.status == "NOT EVALUATED"
    assert v.not_evaluated_gates == ["cv_auc_std"]
    # auc, precision and ECE pass on this sample: the missing CV gate does not fail it
    assert [g.status for g in v.gates if g.name != "cv_auc_std"] == ["PASS", "PASS", "PASS"]
    assert v.passed is True
    assert "NOT EVALUATED" in v.text_report()
    if folds == [0.9]:
        assert v.cv_auc_mean == pytest.approx(0.9)
    else:
        assert v.cv_auc_mean is None


def test_gates_are_configurable_and_can_be_disabled(separable):
    y, p = separable
    gates = ClassifierGates(
        min_auc=0.99, min_precision_at_07=None, max_ece=0.5, max_cv_auc_std=None
    )
    v = validate_classifier(y, p, gates=gates)
    assert [g.name for g in v.gates] == ["auc", "ece"]
    assert _gate(v, "auc").threshold == pytest.approx(0.99)
    assert _gate(v, "ece").threshold == pytest.approx(0.5)
    assert v.passed is True
    defaults = ClassifierGates()
    assert (
        defaults.min_auc,
        defaults.min_precision_at_07,
        defaults.max_ece,
        defaults.max_cv_auc_std,
    ) == (0.85, 0.80, 0.10, 0.05)


def test_ece_gate_is_strict_less_than():
    y = np.array([0, 1, 0, 1, 1, 1])
    p = np.array([0.05, 0.05, 0.55, 0.55, 0.95, 0.95])
    ece = expected_calibration_error(y, p)
    v = validate_classifier(y, p, gates=ClassifierGates(max_ece=ece))
    assert _gate(v, "ece").passed is False


def test_a_gate_says_by_how_much_it_fails_and_never_reads_as_equal():
    std = GateResult("cv_auc_std", 0.0500123, "<", 0.05, False)
    assert std.shown_value == "0.050012"  # not "0.0500", which reads as equal to the limit
    assert std.describe() == "cv_auc_std 0.050012 < 0.05: FAIL (over the limit by 0.000012)"
    auc = GateResult("auc", 0.849996, ">=", 0.85, False)
    assert auc.describe() == "auc 0.849996 >= 0.85: FAIL (short of the minimum by 0.000004)"
    assert GateResult("auc", 0.9, ">=", 0.85, True).describe() == "auc 0.9000 >= 0.85: PASS"
    assert GateResult("ece", 0.1, "<", 0.1, False).describe() == \
        "ece 0.1000 < 0.1: FAIL (equal to the limit, which it must stay below)"
    assert GateResult("cv_auc_std", None, "<", 0.05, None).describe() == \
        "cv_auc_std n/a < 0.05: NOT EVALUATED (no value to compare)"
    assert std.to_dict()["margin"] == pytest.approx(0.0000123)


def test_validation_lists_its_failed_gates_with_numbers(calibrated):
    y, p = calibrated
    v = validate_classifier(y, p, gates=ClassifierGates(min_auc=0.999))
    assert v.failures == [g.describe() for g in v.gates if g.name == "auc"]
    assert v.failures[0].startswith("auc ") and "short of the minimum by" in v.failures[0]
    assert v.to_dict()["failures"] == v.failures
    assert v.failures[0].split()[1] in v.text_report()  # the report shows the same digits


def test_invalid_gates_rejected():
    with pytest.raises(ValueError, match="min_auc"):
        ClassifierGates(min_auc=1.5)
    with pytest.raises(TypeError, match="max_ece"):
        ClassifierGates(max_ece="0.1")


def test_to_dict_is_json_safe(calibrated):
    y, p = calibrated
    v = validate_classifier(y, p, fold_aucs=[np.float64(0.8), np.float32(0.82)])
    d = v.to_dict()
    round_trip = json.loads(json.dumps(d))
    assert round_trip == d
    for key in METRIC_KEYS:
        assert key in d
        assert d[key] is None or type(d[key]) in (float, int)
    assert type(d["auc"]) is float and type(d["n"]) is int
    assert [g["name"] for g in d["gates"]] == GATE_NAMES
    assert all(type(a) is float for a in d["fold_aucs"])
    assert d["passed"] is v.passed


def test_text_report_lists_every_metric_and_gate(calibrated):
    y, p = calibrated
    text = validate_classifier(y, p).text_report()
    for key in METRIC_KEYS:
        assert key in text
    for name in GATE_NAMES:
        assert name in text
    assert "PASS" in text and "NOT EVALUATED" in text and "OVERALL" in text


# ---------------------------------------------------------------------------- input errors


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 1, 0], [0.1, 0.9], "y_true has 3 values but proba has 2"),
        ([0, 1, 0], [0.1, 1.2, 0.3], r"proba must be probabilities in \[0, 1\]"),
        ([0, 1, 0], [0.1, -0.1, 0.3], r"outside"),
        ([0, 1, 0], [0.1, np.nan, 0.3], "proba contains 1 NaN"),
        ([1, 1, 1], [0.1, 0.9, 0.3], r"single class: all 3 labels are 1 \(positive\)"),
        ([0, 0], [0.1, 0.9], r"single class: all 2 labels are 0 \(negative\)"),
        ([0, 2, 1], [0.1, 0.9, 0.3], "only 0/1 labels; found 2"),
        ([0, np.nan, 1], [0.1, 0.9, 0.3], "y_true contains 1 missing"),
        ([], [], "empty"),
        ([0, 1], [[0.9, 0.1], [0.2, 0.8]], r"one-dimensional.*predict_proba"),
        ([0, 1], ["a", "b"], "proba must be numeric"),
    ],
)
def test_bad_input_raises_clear_error(y, p, message):
    with pytest.raises(ValueError, match=message):
        validate_classifier(y, p)


def test_bad_fold_aucs_rejected(separable):
    y, p = separable
    with pytest.raises(ValueError, match="fold_aucs"):
        validate_classifier(y, p, fold_aucs=[0.9, 1.3])
    with pytest.raises(ValueError, match="fold_aucs"):
        validate_classifier(y, p, fold_aucs=[0.9, float("nan")])


def test_accepts_pandas_and_booleans(separable):
    y, p = separable
    v = validate_classifier(pd.Series(y.astype(bool)), pd.Series(p))
    assert v.auc == pytest.approx(1.0)


# ---------------------------------------------------------------------------- time folds


def test_time_fold_aucs_consecutive_whole_days():
    rng = np.random.default_rng(7)
    # 10 days of hourly rows in Paris time (tz-aware), shuffled
    ts = pd.date_range("2021-03-20", periods=10 * 24, freq="h", tz="Europe/Paris")
    n = ts.size
    p = rng.uniform(size=n)
    y = (rng.uniform(size=n) < p).astype(int)
    order = rng.permutation(n)
    aucs = time_fold_aucs(y[order], p[order], ts[order], n_folds=5)
    assert len(aucs) == 5
    days = ts.normalize()
    uniq = days.unique()
    # 240 hours across the spring DST change (2021-03-28) span 11 local calendar days
    assert len(uniq) == 11
    blocks = np.array_split(np.asarray(uniq), 5)
    assert [len(b) for b in blocks] == [3, 2, 2, 2, 2]
    for auc, block in zip(aucs, blocks, strict=True):
        mask = days.isin(block)
        assert auc == pytest.approx(roc_auc_score(y[mask], p[mask]))


def test_time_fold_aucs_skips_single_class_folds():
    ts = pd.date_range("2021-01-01", periods=6 * 24, freq="h")
    day = np.arange(ts.size) // 24
    rng = np.random.default_rng(0)
    p = rng.uniform(size=ts.size)
    y = (rng.uniform(size=ts.size) < p).astype(int)
    y[day < 2] = 1  # first fold (days 0-1) has only positives
    aucs = time_fold_aucs(y, p, pd.Series(ts), n_folds=3)
    assert len(aucs) == 2
    # folds can then feed validate_classifier's stability gate
    v = validate_classifier(y, p, fold_aucs=aucs)
    assert v.cv_auc_mean == pytest.approx(np.mean(aucs))


def test_time_fold_aucs_errors():
    ts = pd.date_range("2021-01-01", periods=4, freq="D")
    with pytest.raises(ValueError, match="n_folds"):
        time_fold_aucs([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], ts, n_folds=0)
    with pytest.raises(ValueError, match="timestamps has 3 values"):
        time_fold_aucs([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], ts[:3])
    with pytest.raises(ValueError, match="NaT"):
        time_fold_aucs([0, 1], [0.1, 0.9], [pd.Timestamp("2021-01-01"), pd.NaT])


# ---------------------------------------------------------------------------- plots and reports


def test_plots_and_reports_written(tmp_path, calibrated):
    y, p = calibrated
    n_open = len(plt.get_fignums())
    plots = plot_classifier(y, p, tmp_path / "plots", threshold=0.5)
    assert set(plots) == set(PLOT_FILES)
    for key, path in plots.items():
        assert path.name == PLOT_FILES[key]
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(plt.get_fignums()) == n_open  # nothing left open in pyplot

    # a validation with one PASS, one FAIL and one NOT EVALUATED gate
    v = validate_classifier(y, p, gates=ClassifierGates(min_precision_at_07=0.99))
    files = write_report(v, tmp_path / "report", plots)
    assert files["text"].name == "classifier_report.txt"
    assert files["html"].name == "classifier_report.html"
    assert files["text"].read_text(encoding="utf-8") == v.text_report()
    page = files["html"].read_text(encoding="utf-8")
    for name in GATE_NAMES:
        assert name in page
    for key in METRIC_KEYS:
        assert key in page
    assert "PASS" in page and "FAIL" in page and "NOT EVALUATED" in page
    assert "class='pass'" in page and "class='fail'" in page
    assert page.count("data:image/png;base64,") == 4
    assert "src='http" not in page  # self-contained


def test_write_report_without_plots_and_missing_plot(tmp_path, separable):
    y, p = separable
    v = validate_classifier(y, p)
    files = write_report(v, tmp_path)
    assert "No plot supplied" in files["html"].read_text(encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="roc"):
        write_report(v, tmp_path, {"roc": tmp_path / "nope.png"})


def test_plot_rejects_bad_threshold(tmp_path, separable):
    y, p = separable
    with pytest.raises(ValueError, match="threshold"):
        plot_classifier(y, p, tmp_path, threshold=1.5)


# ---------------------------------------------------------------------------- real data


@pytest.mark.slow
@pytest.mark.skipif(not PARIS_COUNTS.exists(), reason="Paris counts parquet not available")
def test_real_paris_affluence_classifier(tmp_path):
    df = pd.read_parquet(PARIS_COUNTS, columns=["counter_id", "bike_count", "date"])
    ts = df["date"].dt.tz_localize("UTC").dt.tz_convert("Europe/Paris")
    df = df.assign(timestamp=ts, hour=ts.dt.hour, weekday=ts.dt.weekday)
    df["how"] = df["weekday"] * 24 + df["hour"]
    df["code"] = df["counter_id"].cat.codes
    cutoff = pd.Timestamp("2021-06-01", tz="Europe/Paris")

    # affluence label: count above the counter's median for its hour-of-week (before cutoff)
    median = (
        df[df["timestamp"] < cutoff]
        .groupby(["counter_id", "how"], observed=True)["bike_count"]
        .median()
        .rename("median")
    )
    df = df.join(median, on=["counter_id", "how"]).dropna(subset=["median"])
    df["y"] = (df["bike_count"] > df["median"]).astype(int)

    # Calendar features alone cannot separate the classes (the label is ~50/50 within every
    # counter x hour-of-week cell by construction, AUC ~0.48), so the model also sees the count
    # of the same hour one day and one week before, relative to that median (log ratio).
    counts = df[["counter_id", "timestamp", "bike_count"]]
    for hours in (24, 168):
        lagged = counts.assign(timestamp=counts["timestamp"] + pd.Timedelta(hours=hours))
        df = df.merge(
            lagged.rename(columns={"bike_count": f"lag{hours}"}),
            on=["counter_id", "timestamp"],
            how="left",
        )
        df[f"rel_lag{hours}"] = np.log1p(df[f"lag{hours}"]) - np.log1p(df["median"])
    df = df.dropna(subset=["rel_lag24", "rel_lag168"])

    features = ["hour", "weekday", "code", "rel_lag24", "rel_lag168"]
    before = df[df["timestamp"] < cutoff]
    after = df[df["timestamp"] >= cutoff]
    train = before.sample(n=30_000, random_state=0)
    model = RandomForestClassifier(n_estimators=30, max_depth=10, random_state=0, n_jobs=1)
    model.fit(train[features], train["y"])
    proba = model.predict_proba(after[features])[:, 1]

    folds = time_fold_aucs(after["y"], proba, after["timestamp"], n_folds=5)
    v = validate_classifier(after["y"], proba, fold_aucs=folds)
    print("\n" + v.text_report())

    assert v.auc > 0.8
    assert len(folds) == 5 and v.cv_auc_std is not None
    assert v.n == len(after)
    text = v.text_report()
    for key in METRIC_KEYS:
        assert key in text
    for name in GATE_NAMES:
        assert name in text
    assert all(g.status in ("PASS", "FAIL") for g in v.gates)

    plots = plot_classifier(after["y"], proba, tmp_path)
    files = write_report(v, tmp_path, plots)
    assert files["html"].stat().st_size > 10_000
