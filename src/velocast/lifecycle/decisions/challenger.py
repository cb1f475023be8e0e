"""Train a challenger and judge it against the champion: one function for every caller.

:func:`train_and_judge` trains a challenger (:func:`velocast.lifecycle.training.train.train`), scores it and
the champion on the same rows (:func:`velocast.lifecycle.decisions.evaluate.evaluate_candidate`) and decides
with a policy. :func:`judge` is its second half, for a version already registered: the weekly
cycle trains (``fine_tune``) and judges (``evaluate``) in two steps, which Airflow runs as two tasks.

The verdict is a :class:`Judgement`: decision, reasons and the metrics of both models, JSON-able
(an XCom, a job result), and what an audit row is made from (``AuditEvent.from_outcome``).
Callers: the API's training jobs (``lifecycle.jobs``), the quarterly retrain and the weekly cycle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pandas as pd

from velocast.config import Settings
from velocast.data import splits
from velocast.evaluation.policies import Policy
from velocast.lifecycle.decisions.evaluate import EvaluationOutcome, evaluate_candidate, judged_metrics
from velocast.lifecycle.serving.predict import LoadedModel, load_model
from velocast.lifecycle.training.train import TrainResult, train
from velocast.tracking.registry import ModelRef, Registry

_CHAMPION_NOW: Any = object()  # ``champion`` default: the champion when the judging starts


@dataclass
class Judgement:
    """A challenger judged against the champion on the same rows, and the policy's decision."""

    decision: str  # deploy | reject_regression | skip_no_improvement
    policy: str
    reasons: list[str]
    baseline_regression: bool
    model_improvement: bool
    metrics: dict[str, Any]  # judged_metrics: r2_train ... champion_rmse_current
    decisions: dict[str, str]  # what every policy decides
    compared_champion: str | None  # the champion version compared against (compare-and-swap of a promotion)
    evaluation: dict[str, Any] = field(default_factory=dict)  # DoubleEvaluation.to_dict()
    reports: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, outcome: EvaluationOutcome, policy: str, compared_champion: str | None,
           metrics_train: dict[str, Any] | None = None) -> Judgement:
        decision = outcome.decisions[policy]
        return cls(decision.kind, policy, list(decision.reasons), decision.baseline_regression,
                   decision.model_improvement, judged_metrics(outcome.evaluation, metrics_train),
                   {name: d.kind for name, d in outcome.decisions.items()}, compared_champion,
                   outcome.evaluation.to_dict(), dict(outcome.reports))

    @property
    def metrics_baseline(self) -> dict[str, Any]:
        """The challenger's metrics on test_baseline."""
        return (self.evaluation.get("metrics_baseline") or {}).get("challenger") or {}

    @property
    def metrics_current(self) -> dict[str, Any] | None:
        """The challenger's metrics on test_current (None: there were no such rows)."""
        current = self.evaluation.get("metrics_current")
        return current["challenger"] if current else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Judgement:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def _champion(registry: Registry, model_type: str, ref: ModelRef | None) -> LoadedModel | None:
    return registry.load_model(ref) if ref is not None else None


def judge(model_type: str, version: str, settings: Settings, policy: str = "double_eval", *,
          champion: ModelRef | None = _CHAMPION_NOW, test_baseline: pd.DataFrame | None = None,
          current: pd.DataFrame | None = None, extra_history: pd.DataFrame | None = None,
          split: splits.SplitRecord | None = None, sample: int | None = None,
          metrics_train: dict[str, Any] | None = None) -> Judgement:
    """Double-evaluate the registered ``version`` against ``champion`` (default: the current one) on the
    same rows, and decide with ``policy``.

    The rows: ``test_baseline`` (default: the split's) and ``current`` (default: the split's
    test_current), ``sample`` rows of each at most; ``extra_history``: labelled rows outside the
    store that serve as history (see ``evaluate_candidate``).
    """
    registry = Registry(settings)
    compared = registry.champion(model_type) if champion is _CHAMPION_NOW else champion
    outcome = evaluate_candidate(load_model(model_type, version=version, settings=settings), settings,
                                 current=current, policy=Policy(name=policy, r2_threshold=settings.r2_baseline_threshold),
                                 champion=_champion(registry, model_type, compared), sample=sample, split=split,
                                 test_baseline=test_baseline, extra_history=extra_history)
    return Judgement.of(outcome, policy, compared.version if compared else None, metrics_train)


@dataclass
class Challenger:
    """A challenger trained and judged."""

    trained: TrainResult
    judgement: Judgement


def train_and_judge(model_type: str, settings: Settings, policy: str = "double_eval", *,
                    champion: ModelRef | None = _CHAMPION_NOW, current: pd.DataFrame | None = None,
                    split: splits.SplitRecord | None = None, sample: int | None = None,
                    **train_options: Any) -> Challenger:
    """Train a challenger (``train_options``: those of :func:`velocast.lifecycle.training.train.train`), then
    :func:`judge` it against ``champion`` on the test rows the training used (its ``datasets``' when
    given; else ``split``'s test_baseline and ``current``, or that split's test_current)."""
    trained = train(model_type, settings=settings, **train_options)
    datasets = train_options.get("datasets")
    rows: dict[str, Any] = {"current": current, "split": split}
    if datasets is not None:
        rows = {"test_baseline": datasets.test_baseline.frame, "extra_history": datasets.history,
                "split": datasets.split,
                "current": current if current is not None else
                (datasets.test_current.frame if datasets.test_current is not None else None)}
    judgement = judge(model_type, trained.model_version, settings, policy, champion=champion, sample=sample,
                      metrics_train=trained.metrics_train, **rows)
    return Challenger(trained, judgement)


__all__ = ["Challenger", "Judgement", "judge", "judged_metrics", "train_and_judge"]
