"""Double evaluation: challenger and champion scored now, on the same test rows, then decided.

``test_baseline`` comes from the split snapshot; ``test_current`` from the store's latest 20% of
days after the cutoff, or from a file given by the user. Both models see exactly the same rows,
built as served (``velocast.lifecycle.serving.scoring.ServedRows``: history before each day, no observed
weather of the predicted day in the decision's variant, sensor-outage rows left out). For ``rf_class`` the classifier validation suite runs on ``test_baseline`` and its gates
decide whether the classifier may be promoted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from velocast import progress
from velocast.config import Settings, get_settings
from velocast.data import splits
from velocast.evaluation.classifier import (
    ClassifierGates,
    plot_classifier,
    time_fold_aucs,
    validate_classifier,
    write_report,
)
from velocast.evaluation.policies import (
    Decision,
    DoubleEvaluation,
    PairedScores,
    Policy,
    decide_all,
)
from velocast.evaluation.reports import regression_report
from velocast.lifecycle.audit import AuditEvent, AuditLog
from velocast.lifecycle.serving.predict import LoadedModel, load_model
from velocast.lifecycle.serving.scoring import ServedRows
from velocast.lifecycle.training.datasets import days_unseen_by, read_rows
from velocast.models import task_of
from velocast.tracking.registry import Registry

log = logging.getLogger(__name__)


def judged_metrics(evaluation: DoubleEvaluation, metrics_train: dict[str, Any] | None = None) -> dict[str, Any]:
    """The numbers an audit row keeps of a double evaluation, named as the ``AuditEvent`` fields."""
    out: dict[str, Any] = {"r2_train": (metrics_train or {}).get("r2"),
                           "rmse_train": (metrics_train or {}).get("rmse")}
    for name, paired in (("baseline", evaluation.baseline), ("current", evaluation.current)):
        challenger = paired.challenger if paired is not None else {}
        champion = (paired.champion if paired is not None else None) or {}
        out.update({f"r2_{name}": challenger.get("r2"), f"rmse_{name}": challenger.get("rmse"),
                    f"champion_r2_{name}": champion.get("r2"), f"champion_rmse_{name}": champion.get("rmse")})
    return out


def _paired(name: str, rows: ServedRows, challenger: Any, champion: Any | None) -> PairedScores:
    ch = rows.score(challenger)
    cp = rows.score(champion) if champion is not None else None
    paired = PairedScores(name, len(rows), ch.flat(), cp.flat() if cp else None, predictions=ch.predictions)
    if cp is not None and task_of(challenger) == "regression":
        scored = rows.decision_rows
        y = scored["bike_count"].to_numpy(float)
        frame = pd.DataFrame({"day": splits.paris_day(scored["timestamp"]).to_numpy(),
                              "counter": scored["counter_id"].astype(str).to_numpy(),
                              "se_challenger": (ch.predictions - y) ** 2, "se_champion": (cp.predictions - y) ** 2})
        daily = frame.groupby("day").agg(n=("se_challenger", "size"), se_challenger=("se_challenger", "sum"),
                                         se_champion=("se_champion", "sum")).reset_index()
        counters = frame.groupby("counter").agg(n=("se_challenger", "size"), se_challenger=("se_challenger", "mean"),
                                                se_champion=("se_champion", "mean")).reset_index()
        counters["rmse_challenger"] = np.sqrt(counters.pop("se_challenger"))
        counters["rmse_champion"] = np.sqrt(counters.pop("se_champion"))
        paired.daily, paired.per_counter = daily, counters
    return paired


def double_evaluate(challenger: LoadedModel, champion: LoadedModel | None, test_baseline: ServedRows,
                    test_current: ServedRows | None, gates_passed: bool | None = None,
                    gate_failures: list[str] | None = None) -> DoubleEvaluation:
    """Score both models on the same rows of both test sets, built as served."""
    compared = champion.pipeline if champion is not None else None
    baseline = _paired("test_baseline", test_baseline, challenger.pipeline, compared)
    current = (_paired("test_current", test_current, challenger.pipeline, compared)
               if test_current is not None and len(test_current) else None)
    notes = [f"judged {test_baseline.weather} weather (as forecasts will be served; both are reported)",
             *test_baseline.notes, *(test_current.notes if test_current is not None else [])]
    if current is None:
        notes.append("no test_current rows")
    return DoubleEvaluation(challenger.model_type, challenger.spec.task, challenger.uri,
                            champion.uri if champion is not None else None, baseline, current, gates_passed, notes,
                            list(gate_failures or []))


@dataclass
class EvaluationOutcome:
    evaluation: DoubleEvaluation
    decisions: dict[str, Decision]
    reports: dict[str, str] = field(default_factory=dict)
    classifier: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"double_evaluation": self.evaluation.to_dict(),
                "decisions": {k: d.to_dict() for k, d in self.decisions.items()},
                "reports": self.reports, "classifier_validation": self.classifier}


def classifier_validation(pipeline: Any, rows: pd.DataFrame, out_dir: Path,
                          gates: ClassifierGates | None = None) -> tuple[Any, dict[str, str]]:
    """The rf_class validation suite on labelled rows, with its text/HTML report and plots."""
    from velocast.models import classification_labels, predict_frame

    y = classification_labels(pipeline, rows, rows["bike_count"].to_numpy(float))
    proba = predict_frame(pipeline, rows)["probability"].to_numpy()
    folds = time_fold_aucs(y, proba, rows["timestamp"], n_folds=5)
    validation = validate_classifier(y, proba, folds, gates or ClassifierGates())
    plots = plot_classifier(y, proba, out_dir)
    paths = write_report(validation, out_dir, plots)
    return validation, {k: str(v) for k, v in {**plots, **paths}.items()}


def unseen_by_both(test_baseline: pd.DataFrame, test_current: pd.DataFrame | None, challenger: LoadedModel,
                   champion: LoadedModel | None, settings: Settings,
                   ) -> tuple[pd.DataFrame, pd.DataFrame | None, list[str]]:
    """The test rows of days neither model trained on, and notes on what was left out.

    A version trained after the split (a cycle's challenger fitted on the newest days, a retrain) may
    have trained on the split's test days: scored there, it would be judged on rows it learned. Rows
    of such days are left out for both models; no test_baseline row left is an error (fail closed),
    no test_current row left turns the double evaluation into one on test_baseline (the policies say
    so). A model loaded from a bare URI has no record of its training days: a note says so.
    """
    registry = Registry(settings)
    frames = {"test_baseline": test_baseline, "test_current": test_current}
    days = {name: splits.paris_day(frame["timestamp"]).astype(str).to_numpy()
            for name, frame in frames.items() if frame is not None and len(frame)}
    every_day = set().union(*(set(d) for d in days.values())) if days else set()
    unseen, notes, learned_by = set(every_day), [], []
    if champion is not None and challenger.uri == champion.uri:
        notes.append("the challenger is the champion itself: both are the same model")
    for role, model in (("challenger", challenger), ("champion", champion)):
        if model is None:
            continue
        if model.ref is None:
            notes.append(f"the {role} ({model.uri}) has no record of its training days: its scores may include "
                         "days it trained on")
            continue
        theirs = days_unseen_by(registry, model.ref, every_day, settings)
        seen = sorted(every_day - theirs)
        if seen:
            notes.append(f"the {role} (version {model.ref.version}) trained on {len(seen)} test day(s) "
                         f"({seen[0]} .. {seen[-1]}): their rows are left out for both models")
            learned_by.append(role)
        unseen &= theirs
    out: dict[str, pd.DataFrame | None] = dict(frames)
    for name, frame in frames.items():
        keep = np.isin(days[name], sorted(unseen)) if name in days else None
        if frame is None or keep is None or keep.all():
            continue
        if name == "test_baseline" and not keep.any():
            raise ValueError(f"every test_baseline day was seen in training by the {' or the '.join(learned_by)}: "
                             "nothing unseen to judge on (record a new split with `velocast data split`, or "
                             "evaluate a version trained on that split)")
        out[name] = frame[keep].reset_index(drop=True) if keep.any() else None
        log.info("%s: %d of %d rows left out (days a model trained on)", name, int((~keep).sum()), len(frame))
    return out["test_baseline"], out["test_current"], notes


def evaluate_candidate(challenger: LoadedModel, settings: Settings | None = None,
                       current: pd.DataFrame | None = None, policy: Policy | None = None,
                       champion: LoadedModel | None = None, sample: int | None = None,
                       write_reports: bool = True, split: splits.SplitRecord | None = None,
                       test_baseline: pd.DataFrame | None = None,
                       extra_history: pd.DataFrame | None = None) -> EvaluationOutcome:
    """Double-evaluate ``challenger`` against the current champion and decide with every policy.

    ``test_baseline``/``current``: the test rows (default: the split's); ``extra_history``: labelled
    rows that are not in the store but may serve as history (a training's posted rows), so the
    evaluation builds exactly the rows the training scored.
    """
    settings = settings or get_settings()
    model_type = challenger.model_type
    policy = policy or Policy(r2_threshold=settings.r2_baseline_threshold)
    if champion is None:
        registry = Registry(settings)
        ref = registry.champion(model_type)
        champion = registry.load_model(ref) if ref else None
    split = split or splits.ensure_split(settings)
    test_b = test_baseline if test_baseline is not None else splits.load_split("test_baseline", split, settings)
    test_c = current if current is not None else splits.load_split("test_current", split, settings)
    test_b, test_c, unseen_notes = unseen_by_both(test_b, test_c, challenger, champion, settings)
    if sample:
        test_b = test_b.sample(min(sample, len(test_b)), random_state=0).sort_values("timestamp")
        if test_c is not None and len(test_c) > sample:
            test_c = test_c.sample(sample, random_state=0).sort_values("timestamp")
    progress.step(f"building the test rows as served ({len(test_b):,} test_baseline"
                  + (f", {len(test_c):,} test_current" if test_c is not None else "") + ")")
    served_b = ServedRows.build(test_b, settings, extra_history=extra_history)
    served_c = ServedRows.build(test_c, settings, extra_history=extra_history) \
        if test_c is not None and len(test_c) else None
    reports: dict[str, str] = {}
    folder = settings.reports_dir / "evaluations" / f"{model_type}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}"
    gates_passed, classifier, gate_failures = None, None, []
    if challenger.spec.task == "classification":
        progress.step("classifier validation suite on test_baseline")
        validation, paths = classifier_validation(challenger.pipeline, served_b.decision_rows, folder / "classifier")
        gates_passed, classifier, gate_failures = validation.passed, validation.to_dict(), validation.failures
        reports.update(paths)
    progress.step(f"scoring the challenger{' and the champion' if champion else ''} on the same rows")
    evaluation = double_evaluate(challenger, champion, served_b, served_c, gates_passed, gate_failures)
    evaluation.notes.extend(unseen_notes)
    if write_reports and challenger.spec.task == "regression":
        progress.step("writing the per-counter and per-hour reports")
        for served, paired in ((served_b, evaluation.baseline), (served_c, evaluation.current)):
            if served is None or paired is None:
                continue
            written = regression_report(served.decision_rows, paired.predictions, paired.name).write(folder)
            reports.update({k: str(v) for k, v in written.items()})
    return EvaluationOutcome(evaluation, decide_all(evaluation, policy), reports, classifier)


def evaluate(model_type: str, version: str | None = None, run_id: str | None = None, model_uri: str | None = None,
             current_path: Path | str | None = None, policy: Policy | None = None,
             settings: Settings | None = None) -> EvaluationOutcome:
    """``velocast evaluate``: a registered version (default: the latest) against the champion."""
    settings = settings or get_settings()
    registry = Registry(settings)
    progress.step("loading the challenger and the champion (if there is one)")
    if model_uri:
        challenger = load_model(model_type, model_uri=model_uri, settings=settings)
    else:
        ref = registry.resolve(model_type, version=version, run_id=run_id) if (version or run_id) \
            else registry.latest(model_type)
        if ref is None:
            raise LookupError(f"no registered {model_type} model yet")
        challenger = registry.load_model(ref)
    current = read_rows(current_path) if current_path else None
    policy = policy or Policy(r2_threshold=settings.r2_baseline_threshold)
    outcome = evaluate_candidate(challenger, settings, current, policy)
    decision = outcome.decisions[policy.name]
    evaluation = outcome.evaluation
    AuditLog(settings=settings).record(AuditEvent(  # a decision, even one nobody acts on, is audited
        event="evaluation", model_type=model_type, deployment_decision=decision.kind, reasons=list(decision.reasons),
        baseline_regression=decision.baseline_regression, model_improvement=decision.model_improvement,
        model_uri=challenger.uri, run_id=challenger.ref.run_id if challenger.ref else None, env=settings.env,
        to_version=challenger.ref.version if challenger.ref else None, **judged_metrics(evaluation),
        details={"policy": policy.name, "decisions": {name: d.kind for name, d in outcome.decisions.items()},
                 "champion": evaluation.champion, "notes": list(evaluation.notes)}))
    return outcome
