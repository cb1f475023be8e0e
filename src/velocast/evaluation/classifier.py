"""Validation suite of the ``rf_class`` affluence classifier.

The affluence classifier predicts, for a counter-hour, the probability that the count is above
that counter's median for its hour of the week. This module turns labels and calibrated
probabilities into:

- discrimination metrics: ROC AUC, average precision;
- probabilistic metrics: Brier score, log loss;
- calibration: expected calibration error (ECE, 10 equal-width bins weighted by their size) and
  the calibration slope and intercept (logistic regression of ``y`` on ``logit(p)``; a perfectly
  calibrated model has slope 1 and intercept 0, an over-confident one a slope below 1);
- thresholds: the F1-optimal threshold and precision/recall at the high-confidence threshold 0.7;
- stability: mean and standard deviation of per-fold AUCs (time-series CV folds supplied by the
  caller, or consecutive time blocks of one model's out-of-sample predictions via
  :func:`time_fold_aucs`);
- gates (:class:`ClassifierGates`), a plain-text and a self-contained HTML report, and four plots.

Conventions: a row is predicted positive when ``proba >= threshold``. Everything here is a pure
function of its arguments (numpy, pandas, scikit-learn, matplotlib); nothing is logged anywhere.
"""

from __future__ import annotations

import base64
import html
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

__all__ = [
    "CALIBRATION_CLIP",
    "ECE_BINS",
    "HIGH_CONFIDENCE_THRESHOLD",
    "PLOT_FILES",
    "ClassifierGates",
    "ClassifierValidation",
    "GateResult",
    "distinct_from",
    "expected_calibration_error",
    "plot_classifier",
    "time_fold_aucs",
    "validate_classifier",
    "write_report",
]

#: Threshold of the "high confidence" business metrics (precision/recall at 0.7).
HIGH_CONFIDENCE_THRESHOLD = 0.7
#: Number of equal-width bins on [0, 1] used by the ECE and the reliability diagram.
ECE_BINS = 10
#: Probabilities are clipped to [CALIBRATION_CLIP, 1 - CALIBRATION_CLIP] before taking the logit.
CALIBRATION_CLIP = 1e-6
#: Inverse regularisation of the calibration regression: large enough to be negligible on the
#: log-likelihood, finite so that a perfectly separated sample still gives a finite slope.
_CALIBRATION_C = 1e6

#: File written by :func:`plot_classifier` for each plot key.
PLOT_FILES: dict[str, str] = {
    "roc": "roc.png",
    "precision_recall": "precision_recall.png",
    "calibration": "calibration.png",
    "confusion_matrix": "confusion_matrix.png",
}

# a gate verdict shown in reports, not a password
PASS = "PASS"  # nosec B105
FAIL = "FAIL"
NOT_EVALUATED = "NOT EVALUATED"


# --------------------------------------------------------------------------------------------
# Gates
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierGates:
    """Thresholds a classifier must meet. Set a threshold to ``None`` to disable that gate.

    - ``min_auc``: ROC AUC must be ``>=`` this.
    - ``min_precision_at_07``: precision at threshold 0.7 must be ``>=`` this.
    - ``max_ece``: expected calibration error must be ``<`` this.
    - ``max_cv_auc_std``: standard deviation of the per-fold AUCs must be ``<`` this (not
      evaluated when fewer than two fold AUCs are available).
    """

    min_auc: float | None = 0.85
    min_precision_at_07: float | None = 0.80
    max_ece: float | None = 0.10
    max_cv_auc_std: float | None = 0.05

    def __post_init__(self) -> None:
        for name in ("min_auc", "min_precision_at_07", "max_ece", "max_cv_auc_std"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"ClassifierGates.{name} must be a number or None, got {value!r}")
            if not (0.0 <= float(value) <= 1.0):
                raise ValueError(f"ClassifierGates.{name} must be within [0, 1], got {value!r}")


@dataclass(frozen=True)
class GateResult:
    """Outcome of one gate. ``passed`` is ``None`` when the gate could not be evaluated."""

    name: str
    value: float | None
    operator: str
    threshold: float
    passed: bool | None

    @property
    def status(self) -> str:
        if self.passed is None:
            return NOT_EVALUATED
        return PASS if self.passed else FAIL

    @property
    def rule(self) -> str:
        return f"{self.operator} {self.threshold:g}"

    @property
    def shown_value(self) -> str:
        """The value with as many decimals as it takes to tell it from the threshold and to show the
        margin's first two digits (4 at least)."""
        if self.value is None:
            return "n/a"
        return distinct_from(self.value, self.threshold, _decimals(self.margin))

    @property
    def margin(self) -> float | None:
        """How far the value lies past the threshold in the failing direction (> 0: by how much it fails)."""
        if self.value is None or not math.isfinite(self.value):
            return None
        return self.threshold - self.value if self.operator == ">=" else self.value - self.threshold

    def describe(self) -> str:
        """One line, e.g. ``cv_auc_std 0.05001 < 0.05: FAIL (over the limit by 0.00001)``."""
        line = f"{self.name} {self.shown_value} {self.rule}: {self.status}"
        if self.passed is None:
            return line + " (no value to compare)"
        if self.passed is False:
            margin = self.margin or 0.0
            if margin == 0:
                return line + " (equal to the limit, which it must " + \
                    ("reach)" if self.operator == ">=" else "stay below)")
            word = "short of the minimum" if self.operator == ">=" else "over the limit"
            return line + f" ({word} by {_fixed(margin, _decimals(margin))})"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": _json_float(self.value),
            "operator": self.operator,
            "threshold": float(self.threshold),
            "passed": self.passed,
            "status": self.status,
            "margin": _json_float(self.margin),
            "description": self.describe(),
        }


def _decimals(margin: float | None, at_least: int = 4) -> int:
    """Decimals that show the first two significant digits of ``margin`` (``at_least`` of them)."""
    if margin is None or not math.isfinite(margin) or margin == 0:
        return at_least
    return max(at_least, 1 - math.floor(math.log10(abs(margin))))


def distinct_from(value: float, reference: float, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals, or more until the text no longer reads as ``reference``.

    0.0500123 beside a 0.05 limit prints ``0.050012``, never ``0.0500`` (which reads as equal).
    """
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    for shown in range(digits, 16):
        text = _fixed(value, shown)
        if value == reference or float(text) != reference:
            return text
    return repr(value)


def _fixed(value: float, decimals: int, at_least: int = 4) -> str:
    """``value`` with ``decimals`` decimals, trailing zeros past the first ``at_least`` removed."""
    text = f"{value:.{decimals}f}"
    if decimals > at_least and "." in text:
        whole, frac = text.split(".")
        text = f"{whole}.{frac[:at_least]}{frac[at_least:].rstrip('0')}"
    return text


def _gate(name: str, value: float | None, operator: str, threshold: float) -> GateResult:
    if value is None or not math.isfinite(value):
        return GateResult(name, value, operator, float(threshold), None)
    if operator == ">=":
        ok = value >= threshold
    elif operator == "<":
        ok = value < threshold
    else:  # pragma: no cover - internal misuse
        raise ValueError(f"unknown gate operator {operator!r}")
    return GateResult(name, float(value), operator, float(threshold), bool(ok))


# --------------------------------------------------------------------------------------------
# Validation result
# --------------------------------------------------------------------------------------------

#: (section, key, label) of every metric of a validation, in report order.
_METRICS: tuple[tuple[str, str, str], ...] = (
    ("Sample", "n", "Rows"),
    ("Sample", "positive_rate", "Positive rate"),
    ("Discrimination", "auc", "ROC AUC"),
    ("Discrimination", "average_precision", "Average precision"),
    ("Probabilistic", "brier", "Brier score"),
    ("Probabilistic", "log_loss", "Log loss"),
    ("Calibration", "ece", f"Expected calibration error ({ECE_BINS} bins)"),
    ("Calibration", "calibration_slope", "Calibration slope"),
    ("Calibration", "calibration_intercept", "Calibration intercept"),
    ("Threshold", "f1_optimal_threshold", "F1-optimal threshold"),
    ("Threshold", "f1_at_optimal", "F1 at optimal threshold"),
    ("Threshold", "precision_at_07", f"Precision at {HIGH_CONFIDENCE_THRESHOLD}"),
    ("Threshold", "recall_at_07", f"Recall at {HIGH_CONFIDENCE_THRESHOLD}"),
    ("CV stability", "cv_n_folds", "Folds with an AUC"),
    ("CV stability", "cv_auc_mean", "Mean fold AUC"),
    ("CV stability", "cv_auc_std", "Std of fold AUCs"),
)

_GATE_LABELS = {
    "auc": "ROC AUC",
    "precision_at_07": f"Precision at {HIGH_CONFIDENCE_THRESHOLD}",
    "ece": "Expected calibration error",
    "cv_auc_std": "Std of fold AUCs",
}


@dataclass
class ClassifierValidation:
    """Every metric of one validation, the gate outcomes and the reports built from them."""

    auc: float
    average_precision: float
    brier: float
    log_loss: float
    ece: float
    calibration_slope: float | None
    calibration_intercept: float | None
    f1_optimal_threshold: float
    f1_at_optimal: float
    precision_at_07: float
    recall_at_07: float
    cv_auc_mean: float | None
    cv_auc_std: float | None
    n: int
    positive_rate: float
    gates: list[GateResult] = field(default_factory=list)
    fold_aucs: list[float] = field(default_factory=list)

    @property
    def cv_n_folds(self) -> int:
        return len(self.fold_aucs)

    @property
    def passed(self) -> bool:
        """True when every evaluated gate passes (gates not evaluated do not count)."""
        return all(g.passed is not False for g in self.gates)

    @property
    def failed_gates(self) -> list[str]:
        return [g.name for g in self.gates if g.passed is False]

    @property
    def failures(self) -> list[str]:
        """One line per failed gate: its value, its rule and by how much it fails."""
        return [g.describe() for g in self.gates if g.passed is False]

    @property
    def not_evaluated_gates(self) -> list[str]:
        return [g.name for g in self.gates if g.passed is None]

    def metrics(self) -> dict[str, float | int | None]:
        """The metrics only (no gates), keyed like the dataclass fields."""
        return {key: getattr(self, key) for _, key, _ in _METRICS}

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary: plain floats/ints, ``None`` for missing values."""
        out: dict[str, Any] = {}
        for _, key, _ in _METRICS:
            value = getattr(self, key)
            out[key] = int(value) if key in ("n", "cv_n_folds") else _json_float(value)
        out["fold_aucs"] = [float(a) for a in self.fold_aucs]
        out["gates"] = [g.to_dict() for g in self.gates]
        out["passed"] = bool(self.passed)
        out["failed_gates"] = self.failed_gates
        out["failures"] = self.failures
        out["not_evaluated_gates"] = self.not_evaluated_gates
        return out

    def text_report(self) -> str:
        """A readable plain-text table of every metric and every gate."""
        width = 78
        lines = ["=" * width, "CLASSIFIER VALIDATION REPORT", "=" * width]
        section = None
        for sec, key, label in _METRICS:
            if sec != section:
                section = sec
                lines += ["", sec.upper(), "-" * width]
            lines.append(f"{label:<42}{key:<24}{_fmt(getattr(self, key), key):>12}")
        if self.fold_aucs:
            lines.append(f"{'Fold AUCs':<42}{'fold_aucs':<24}")
            lines.append("    " + ", ".join(f"{a:.4f}" for a in self.fold_aucs))
        lines += ["", "GATES", "-" * width]
        lines.append(f"{'Gate':<18}{'Description':<28}{'Value':>10}  {'Rule':<9} Status")
        for g in self.gates:
            desc = _GATE_LABELS.get(g.name, g.name)
            lines.append(f"{g.name:<18}{desc:<28}{g.shown_value:>10}  {g.rule:<9} {g.status}")
        if not self.gates:
            lines.append("(no gate configured)")
        lines += ["", f"OVERALL: {self._overall_line()}", "=" * width]
        return "\n".join(lines) + "\n"

    def _overall_line(self) -> str:
        n_pass = sum(g.passed is True for g in self.gates)
        n_fail = sum(g.passed is False for g in self.gates)
        n_na = sum(g.passed is None for g in self.gates)
        verdict = PASS if self.passed else FAIL
        return f"{verdict} ({n_pass} passed, {n_fail} failed, {n_na} not evaluated)"


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def validate_classifier(
    y_true: Any,
    proba: Any,
    fold_aucs: Sequence[float] | None = None,
    gates: ClassifierGates = ClassifierGates(),
) -> ClassifierValidation:
    """Compute every classifier metric and evaluate the gates.

    ``y_true``: 0/1 (or boolean) labels, both classes present. ``proba``: predicted probability
    of class 1, in [0, 1]. ``fold_aucs``: per-fold AUCs (time-series CV or :func:`time_fold_aucs`);
    ``None``/empty means the stability gate is reported as not evaluated.
    """
    y, p = _check_inputs(y_true, proba, require_both_classes=True)
    folds = _check_fold_aucs(fold_aucs)

    pred = p >= HIGH_CONFIDENCE_THRESHOLD
    precision_07, recall_07 = _precision_recall(y, pred)
    threshold, f1_best = _f1_optimal(y, p)
    slope, intercept = _calibration_slope_intercept(y, p)

    cv_mean = float(np.mean(folds)) if folds else None
    # Population standard deviation (numpy's default, like ``cross_val_score(...).std()``);
    # undefined with a single fold.
    cv_std = float(np.std(folds)) if len(folds) >= 2 else None

    validation = ClassifierValidation(
        auc=float(roc_auc_score(y, p)),
        average_precision=float(average_precision_score(y, p)),
        brier=float(brier_score_loss(y, p)),
        log_loss=float(log_loss(y, p, labels=[0, 1])),
        ece=expected_calibration_error(y, p),
        calibration_slope=slope,
        calibration_intercept=intercept,
        f1_optimal_threshold=threshold,
        f1_at_optimal=f1_best,
        precision_at_07=precision_07,
        recall_at_07=recall_07,
        cv_auc_mean=cv_mean,
        cv_auc_std=cv_std,
        n=int(y.size),
        positive_rate=float(y.mean()),
        fold_aucs=folds,
    )
    validation.gates = _evaluate_gates(validation, gates)
    return validation


def _evaluate_gates(v: ClassifierValidation, gates: ClassifierGates) -> list[GateResult]:
    out: list[GateResult] = []
    if gates.min_auc is not None:
        out.append(_gate("auc", v.auc, ">=", gates.min_auc))
    if gates.min_precision_at_07 is not None:
        out.append(_gate("precision_at_07", v.precision_at_07, ">=", gates.min_precision_at_07))
    if gates.max_ece is not None:
        out.append(_gate("ece", v.ece, "<", gates.max_ece))
    if gates.max_cv_auc_std is not None:
        out.append(_gate("cv_auc_std", v.cv_auc_std, "<", gates.max_cv_auc_std))
    return out


def expected_calibration_error(y_true: Any, proba: Any, n_bins: int = ECE_BINS) -> float:
    """ECE over ``n_bins`` equal-width bins of [0, 1], each bin weighted by its share of rows.

    Bins are those of :func:`sklearn.calibration.calibration_curve` (``strategy="uniform"``), so
    the value matches the reliability diagram of :func:`plot_classifier`.
    """
    y, p = _check_inputs(y_true, proba, require_both_classes=False)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_ids = np.searchsorted(edges[1:-1], p)
    sum_y = np.bincount(bin_ids, weights=y, minlength=n_bins)
    sum_p = np.bincount(bin_ids, weights=p, minlength=n_bins)
    # sum_b (n_b / n) * |mean_y_b - mean_p_b| == sum_b |sum_y_b - sum_p_b| / n
    return float(np.sum(np.abs(sum_y - sum_p)) / y.size)


def _precision_recall(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Precision and recall of boolean predictions (0.0 when undefined, like zero_division=0)."""
    tp = float(np.sum(pred & (y == 1)))
    n_pred = float(np.sum(pred))
    n_pos = float(np.sum(y == 1))
    precision = tp / n_pred if n_pred > 0 else 0.0
    recall = tp / n_pos if n_pos > 0 else 0.0
    return precision, recall


def _f1_optimal(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Threshold (one of the distinct scores) maximising F1 of ``proba >= threshold``."""
    precision, recall, thresholds = precision_recall_curve(y, p)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    return float(thresholds[best]), float(f1[best])


def _calibration_slope_intercept(y: np.ndarray, p: np.ndarray) -> tuple[float | None, float | None]:
    """Logistic regression of ``y`` on ``logit(clip(p))``: (slope, intercept).

    ``(None, None)`` when every prediction is the same value (the slope is not identifiable).
    """
    clipped = np.clip(p, CALIBRATION_CLIP, 1.0 - CALIBRATION_CLIP)
    x = np.log(clipped / (1.0 - clipped)).reshape(-1, 1)
    if np.ptp(x) == 0.0:
        return None, None
    model = LogisticRegression(C=_CALIBRATION_C, solver="lbfgs", max_iter=1000, tol=1e-10)
    with warnings.catch_warnings():
        # A perfectly separated sample drives the slope up to the (tiny) penalty's limit.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y.astype(int))
    return float(model.coef_[0, 0]), float(model.intercept_[0])


# --------------------------------------------------------------------------------------------
# CV stability from one model's out-of-sample predictions
# --------------------------------------------------------------------------------------------


def time_fold_aucs(y_true: Any, proba: Any, timestamps: Any, n_folds: int = 5) -> list[float]:
    """AUC on each of ``n_folds`` consecutive time blocks made of whole calendar days.

    Days (local calendar days when ``timestamps`` are timezone-aware) are sorted and split into
    ``n_folds`` contiguous blocks of (nearly) equal numbers of days; when there are fewer days
    than folds, each day is a block. A block whose labels hold a single class has no AUC and is
    skipped. Returns the AUCs in time order.
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 1:
        raise ValueError(f"n_folds must be a positive integer, got {n_folds!r}")
    y, p = _check_inputs(y_true, proba, require_both_classes=False)
    if np.ndim(timestamps) != 1:
        raise ValueError(f"timestamps must be one-dimensional, got shape {np.shape(timestamps)}")
    if not isinstance(timestamps, (pd.Series, pd.Index)):
        timestamps = pd.Series(timestamps)
    try:
        ts = pd.DatetimeIndex(pd.to_datetime(timestamps))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"timestamps could not be read as datetimes: {exc}") from exc
    if ts.size != y.size:
        raise ValueError(
            f"timestamps has {ts.size} values but y_true and proba have {y.size}; "
            "they must be the same length"
        )
    if ts.hasnans:
        raise ValueError(f"timestamps contains {int(ts.isna().sum())} missing value(s) (NaT)")

    day_codes, days = pd.factorize(ts.normalize(), sort=True)
    blocks = np.array_split(np.arange(len(days)), min(int(n_folds), len(days)))
    aucs: list[float] = []
    for block in blocks:
        mask = np.isin(day_codes, block)
        y_block = y[mask]
        if y_block.size == 0 or np.unique(y_block).size < 2:
            continue
        aucs.append(float(roc_auc_score(y_block, p[mask])))
    return aucs


# --------------------------------------------------------------------------------------------
# Plots and reports
# --------------------------------------------------------------------------------------------


def plot_classifier(
    y_true: Any, proba: Any, out_dir: Path, threshold: float = 0.5
) -> dict[str, Path]:
    """Write roc.png, precision_recall.png, calibration.png and confusion_matrix.png.

    Figures are drawn on Agg canvases without pyplot: nothing touches the global backend or
    pyplot's figure registry, and each figure is cleared once saved. Returns ``{key: path}``
    with the keys of :data:`PLOT_FILES`.
    """
    if not (isinstance(threshold, (int, float)) and 0.0 <= float(threshold) <= 1.0):
        raise ValueError(f"threshold must be within [0, 1], got {threshold!r}")
    y, p = _check_inputs(y_true, proba, require_both_classes=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {key: out_dir / name for key, name in PLOT_FILES.items()}

    # ROC
    fig, ax = _new_figure()
    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, lw=2, label=f"ROC (AUC = {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="chance")
    ax.set(
        xlabel="False positive rate",
        ylabel="True positive rate",
        title="ROC curve",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right")
    _save(fig, paths["roc"])

    # Precision-recall
    fig, ax = _new_figure()
    precision, recall, _ = precision_recall_curve(y, p)
    ax.plot(recall, precision, lw=2, label=f"PR (AP = {average_precision_score(y, p):.3f})")
    ax.axhline(float(y.mean()), ls="--", color="grey", label=f"positive rate {y.mean():.2f}")
    prec_07, rec_07 = _precision_recall(y, p >= HIGH_CONFIDENCE_THRESHOLD)
    ax.scatter(
        [rec_07],
        [prec_07],
        color="red",
        zorder=3,
        label=f"threshold {HIGH_CONFIDENCE_THRESHOLD}: P={prec_07:.2f} R={rec_07:.2f}",
    )
    ax.set(
        xlabel="Recall",
        ylabel="Precision",
        title="Precision-recall curve",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower left")
    _save(fig, paths["precision_recall"])

    # Calibration (reliability diagram + histogram of the probabilities)
    fig = Figure(figsize=(6, 6))
    FigureCanvasAgg(fig)
    ax, ax_hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    frac_pos, mean_pred = calibration_curve(y, p, n_bins=ECE_BINS, strategy="uniform")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfectly calibrated")
    ax.plot(
        mean_pred,
        frac_pos,
        marker="o",
        lw=2,
        label=f"model (ECE = {expected_calibration_error(y, p):.3f})",
    )
    ax.set(
        ylabel="Observed positive rate",
        title="Calibration (reliability diagram)",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left")
    ax_hist.hist(p, bins=np.linspace(0, 1, ECE_BINS + 1), color="tab:blue", alpha=0.7)
    ax_hist.set(xlabel="Predicted probability", ylabel="Rows")
    fig.tight_layout()
    _save(fig, paths["calibration"])

    # Confusion matrix at ``threshold``
    fig, ax = _new_figure()
    cm = confusion_matrix(y, (p >= threshold).astype(int), labels=[0, 1])
    ax.imshow(cm, cmap="Blues")
    row_totals = cm.sum(axis=1, keepdims=True)
    shares = np.divide(cm, row_totals, out=np.zeros(cm.shape), where=row_totals > 0)
    vmax = cm.max() if cm.max() > 0 else 1
    for i in range(2):
        for j in range(2):
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n({shares[i, j]:.1%})",
                ha="center",
                va="center",
                color="white" if cm[i, j] > vmax / 2 else "black",
            )
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["low (0)", "high (1)"],
        yticklabels=["low (0)", "high (1)"],
        xlabel="Predicted",
        ylabel="Actual",
        title=f"Confusion matrix (threshold {float(threshold):g})",
    )
    _save(fig, paths["confusion_matrix"])
    return paths


def write_report(
    validation: ClassifierValidation,
    out_dir: Path,
    plots: dict[str, Path] | None = None,
) -> dict[str, Path]:
    """Write classifier_report.txt and a self-contained classifier_report.html.

    ``plots`` (as returned by :func:`plot_classifier`) are embedded in the HTML as base64 PNGs.
    Returns ``{"text": path, "html": path}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images: list[tuple[str, bytes]] = []
    for key, path in (plots or {}).items():
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"plot {key!r} not found at {path}")
        images.append((key, path.read_bytes()))

    text_path = out_dir / "classifier_report.txt"
    html_path = out_dir / "classifier_report.html"
    text_path.write_text(validation.text_report(), encoding="utf-8")
    html_path.write_text(_html_report(validation, images), encoding="utf-8")
    return {"text": text_path, "html": html_path}


def _html_report(v: ClassifierValidation, images: list[tuple[str, bytes]]) -> str:
    esc = html.escape
    rows = []
    for section, key, label in _METRICS:
        rows.append(
            f"<tr><td>{esc(section)}</td><td>{esc(label)}</td><td><code>{esc(key)}</code></td>"
            f"<td class='num'>{esc(_fmt(getattr(v, key), key))}</td></tr>"
        )
    if v.fold_aucs:
        folds = ", ".join(f"{a:.4f}" for a in v.fold_aucs)
        rows.append(
            f"<tr><td>CV stability</td><td>Fold AUCs</td><td><code>fold_aucs</code></td>"
            f"<td class='num'>{esc(folds)}</td></tr>"
        )
    gate_rows = []
    for g in v.gates:
        css = {PASS: "pass", FAIL: "fail"}.get(g.status, "na")
        gate_rows.append(
            f"<tr class='{css}'><td><code>{esc(g.name)}</code></td>"
            f"<td>{esc(_GATE_LABELS.get(g.name, g.name))}</td>"
            f"<td class='num'>{esc(g.shown_value)}</td><td>{esc(g.rule)}</td>"
            f"<td class='status'>{esc(g.status)}</td></tr>"
        )
    if not gate_rows:
        gate_rows.append("<tr><td colspan='5'>no gate configured</td></tr>")
    figures = []
    for key, data in images:
        encoded = base64.b64encode(data).decode("ascii")
        figures.append(
            f"<figure><img alt='{esc(key)}' src='data:image/png;base64,{encoded}'>"
            f"<figcaption>{esc(key)}</figcaption></figure>"
        )
    overall_css = "pass" if v.passed else "fail"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Classifier validation report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }}
th {{ background: #f0f0f0; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.pass td.status, .overall.pass {{ background: #c8f0c8; color: #145214; font-weight: bold; }}
tr.fail td.status, .overall.fail {{ background: #f8c8c8; color: #7a1010; font-weight: bold; }}
tr.na td.status {{ background: #e8e8e8; color: #555; font-style: italic; }}
.overall {{ display: inline-block; padding: 0.4em 1em; border-radius: 4px; }}
figure {{ display: inline-block; margin: 0.5em; }}
img {{ max-width: 560px; border: 1px solid #ddd; }}
</style>
</head>
<body>
<h1>Classifier validation report</h1>
<p class="overall {overall_css}">OVERALL: {esc(v._overall_line())}</p>
<h2>Gates</h2>
<table>
<tr><th>Gate</th><th>Description</th><th>Value</th><th>Rule</th><th>Status</th></tr>
{chr(10).join(gate_rows)}
</table>
<h2>Metrics</h2>
<table>
<tr><th>Section</th><th>Metric</th><th>Key</th><th>Value</th></tr>
{chr(10).join(rows)}
</table>
<h2>Plots</h2>
{chr(10).join(figures) if figures else "<p>No plot supplied.</p>"}
</body>
</html>
"""


def _new_figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=(6, 5))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig: Figure, path: Path) -> None:
    try:
        fig.savefig(path, dpi=100, format="png")
    finally:
        fig.clear()


# --------------------------------------------------------------------------------------------
# Input checks and formatting
# --------------------------------------------------------------------------------------------


def _as_float_array(values: Any, name: str) -> np.ndarray:
    if isinstance(values, (pd.Series, pd.Index)):
        try:
            return values.to_numpy(dtype=float, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be numeric: {exc}") from exc
    arr = np.asarray(values)
    if arr.ndim != 1:
        hint = " (pass predict_proba(X)[:, 1])" if name == "proba" and arr.ndim == 2 else ""
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}{hint}")
    if arr.dtype == object:
        arr = np.array([np.nan if v is None or v is pd.NA else v for v in arr], dtype=object)
    try:
        return arr.astype(float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc


def _check_inputs(
    y_true: Any, proba: Any, *, require_both_classes: bool
) -> tuple[np.ndarray, np.ndarray]:
    y = _as_float_array(y_true, "y_true")
    p = _as_float_array(proba, "proba")
    if y.ndim != 1 or p.ndim != 1:
        raise ValueError(
            f"y_true and proba must be one-dimensional, got shapes {y.shape} and {p.shape}"
        )
    if y.size != p.size:
        raise ValueError(
            f"y_true has {y.size} values but proba has {p.size}; they must be the same length"
        )
    if y.size == 0:
        raise ValueError("y_true and proba are empty")
    n_nan_y = int(np.isnan(y).sum())
    if n_nan_y:
        raise ValueError(f"y_true contains {n_nan_y} missing value(s) (NaN)")
    bad_labels = np.setdiff1d(np.unique(y), [0.0, 1.0])
    if bad_labels.size:
        shown = ", ".join(f"{v:g}" for v in bad_labels[:5])
        raise ValueError(f"y_true must contain only 0/1 labels; found {shown}")
    n_nan_p = int(np.isnan(p).sum())
    if n_nan_p:
        raise ValueError(f"proba contains {n_nan_p} NaN value(s); probabilities must be in [0, 1]")
    outside = (p < 0.0) | (p > 1.0)
    if outside.any():
        raise ValueError(
            f"proba must be probabilities in [0, 1]; {int(outside.sum())} value(s) are outside "
            f"(min {p.min():g}, max {p.max():g})"
        )
    if require_both_classes:
        classes = np.unique(y)
        if classes.size < 2:
            only = int(classes[0])
            kind = "positive" if only == 1 else "negative"
            missing = 0 if only == 1 else 1
            raise ValueError(
                f"y_true contains a single class: all {y.size} labels are {only} ({kind}), "
                f"none is {missing}; AUC, average precision and calibration need both classes"
            )
    return y, p


def _check_fold_aucs(fold_aucs: Sequence[float] | None) -> list[float]:
    if fold_aucs is None:
        return []
    if isinstance(fold_aucs, (str, bytes)) or np.ndim(fold_aucs) != 1:
        raise ValueError("fold_aucs must be a flat list of per-fold AUCs")
    try:
        folds = [float(a) for a in fold_aucs]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"fold_aucs must be numbers: {exc}") from exc
    bad = [a for a in folds if not (math.isfinite(a) and 0.0 <= a <= 1.0)]
    if bad:
        raise ValueError(f"fold_aucs must be AUCs within [0, 1]; invalid: {bad[:5]}")
    return folds


def _json_float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: Any, key: str = "") -> str:
    if value is None:
        return "n/a"
    if key in ("n", "cv_n_folds"):
        return f"{int(value):d}"
    return f"{float(value):.4f}"
