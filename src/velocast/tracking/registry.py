"""One registry facade over MLflow's model registry (versions, aliases) and summary.json.

Models are registered as ``bike-traffic-<type>``; the serving model carries the alias
``champion`` and the one before it ``previous-champion`` (aliases, never the deprecated stages).

A version is registered with the tag ``velocast_status=pending`` (atomically with the version) and
tagged ``complete`` only once its summary.json entry is written and its run is FINISHED (see
``velocast.lifecycle.train``). Lookups that pick a version by themselves (``latest``, ``resolve``
without a version, ``versions``) ignore pending ones, and a pending version cannot be promoted: a
training killed half-way never serves. Versions registered before this tag existed count as complete.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from velocast.config import Settings, get_settings
from velocast.models import registered_name
from velocast.tracking.mlflow_runs import configure, import_skops, silence_mlflow_logs
from velocast.tracking.summary import SummaryStore

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous-champion"
_RUN_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
STATUS_TAG = "velocast_status"
PENDING = "pending"
COMPLETE = "complete"
ATTEMPT_TAG = "velocast_attempt"  # the training attempt (its liveness lock) that registered the version


@dataclass
class ModelRef:
    model_type: str
    name: str
    version: str
    run_id: str | None
    source: str
    aliases: list[str] = field(default_factory=list)
    created_at: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def complete(self) -> bool:
        """False while (or if) the training that registered it has not finished."""
        return self.tags.get(STATUS_TAG, COMPLETE) != PENDING

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "uri": self.uri}


class Registry:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        silence_mlflow_logs()
        configure(self.settings)
        self.client = mlflow.MlflowClient()
        self.summary = SummaryStore(settings=self.settings)

    # ------------------------------------------------------------------ reading
    def _ref(self, model_type: str, mv: Any, with_metrics: bool = False) -> ModelRef:
        metrics: dict[str, float] = {}
        if with_metrics and mv.run_id:
            try:
                metrics = dict(self.client.get_run(mv.run_id).data.metrics)
            except MlflowException:
                metrics = {}
        return ModelRef(model_type=model_type, name=mv.name, version=str(mv.version), run_id=mv.run_id,
                        source=mv.source, aliases=list(getattr(mv, "aliases", []) or []),
                        created_at=mv.creation_timestamp, metrics=metrics, tags=dict(mv.tags or {}))

    def versions(self, model_type: str, with_metrics: bool = False, include_pending: bool = False) -> list[ModelRef]:
        name = registered_name(model_type)
        try:
            found = self.client.search_model_versions(f"name='{name}'")
        except MlflowException:
            return []
        refs = [self._ref(model_type, mv, with_metrics) for mv in found]
        if not include_pending:
            refs = [r for r in refs if r.complete]
        return sorted(refs, key=lambda r: int(r.version))

    def by_alias(self, model_type: str, alias: str = CHAMPION, with_metrics: bool = False) -> ModelRef | None:
        try:
            mv = self.client.get_model_version_by_alias(registered_name(model_type), alias)
        except MlflowException:
            return None
        return self._ref(model_type, mv, with_metrics)

    def champion(self, model_type: str, with_metrics: bool = False) -> ModelRef | None:
        return self.by_alias(model_type, CHAMPION, with_metrics)

    def get(self, model_type: str, version: str | int, with_metrics: bool = False) -> ModelRef:
        try:
            mv = self.client.get_model_version(registered_name(model_type), str(version))
        except MlflowException as exc:
            raise LookupError(f"{registered_name(model_type)} has no version {version}") from exc
        return self._ref(model_type, mv, with_metrics)

    def for_run(self, model_type: str, run_id: str) -> ModelRef:
        name = registered_name(model_type)
        # the id goes into an MLflow filter string: anything but an id's characters (a quote...) would
        # change the filter or break it, so it cannot name a run
        if not _RUN_ID.fullmatch(str(run_id)):
            raise LookupError(f"{str(run_id)[:80]!r} is not a run id (letters, digits, '-' and '_')")
        found = self.client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
        if not found:
            raise LookupError(f"run {run_id} has no registered version of {name}")
        return self._ref(model_type, max(found, key=lambda mv: int(mv.version)))

    def latest(self, model_type: str) -> ModelRef | None:
        refs = self.versions(model_type)
        return refs[-1] if refs else None

    def resolve(self, model_type: str, version: str | int | None = None, run_id: str | None = None,
                alias: str | None = None) -> ModelRef:
        """A version by number, run, or alias; default: the champion, else the latest version."""
        if version is not None:
            return self.get(model_type, version)
        if run_id is not None:
            return self.for_run(model_type, run_id)
        if alias is not None:
            ref = self.by_alias(model_type, alias)
            if ref is None:
                raise LookupError(f"{registered_name(model_type)} has no alias @{alias}")
            return ref
        ref = self.champion(model_type) or self.latest(model_type)
        if ref is None:
            raise LookupError(f"no registered {model_type} model yet: run `velocast train --model-type {model_type}`")
        return ref

    def load(self, ref: ModelRef) -> Any:
        """The fitted pipeline of a registered version (native scikit-learn object)."""
        import mlflow.sklearn

        import_skops()  # before MLflow imports it: skops' own import would import torch
        return mlflow.sklearn.load_model(ref.uri)

    # ------------------------------------------------------------------ writing
    def trained_days(self, ref: ModelRef) -> set[str] | None:
        """Paris days (ISO) the version's run trained on (its ``data/days.json``); None if not recorded."""
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        try:
            recorded = mlflow.artifacts.load_dict(f"runs:/{ref.run_id}/data/days.json")
        except (MlflowException, OSError, ValueError):  # a run of an older velocast: nothing recorded
            return None
        return set(recorded.get("train_days", {}))

    def register(self, model_type: str, model_uri: str, run_id: str, tags: dict[str, str],
                 model_id: str | None = None) -> ModelRef:
        """A new version of ``bike-traffic-<type>`` from a logged model (``models:/<model_id>``)."""
        name = registered_name(model_type)
        try:
            self.client.create_registered_model(name, description=f"velocast {model_type} models")
        except MlflowException:
            pass  # exists already
        if model_id is None and model_uri.startswith("models:/") and "/" not in model_uri[len("models:/"):]:
            model_id = model_uri[len("models:/"):]
        # a tracking server refuses a ``models:/<model_id>`` source unless the model id is named too
        mv = self.client.create_model_version(name, model_uri, run_id=run_id, tags={STATUS_TAG: PENDING, **tags},
                                              model_id=model_id)
        return self._ref(model_type, mv)

    def mark_complete(self, model_type: str, version: str) -> None:
        """The training of ``version`` is over (summary entry written, run FINISHED): lookups may use it."""
        self.client.set_model_version_tag(registered_name(model_type), str(version), STATUS_TAG, COMPLETE)

    def delete_version(self, model_type: str, version: str) -> None:
        self.client.delete_model_version(registered_name(model_type), version)

    def set_alias(self, model_type: str, alias: str, version: str | None) -> None:
        """Point ``alias`` at ``version``; None removes the alias."""
        name = registered_name(model_type)
        if version is None:
            try:
                self.client.delete_registered_model_alias(name, alias)
            except MlflowException:
                pass
        else:
            self.client.set_registered_model_alias(name, alias, str(version))
