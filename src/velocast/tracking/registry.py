"""One registry facade over MLflow's model registry (versions, aliases) and summary.json.

The registry is the one truth: the alias ``champion`` says who is champion, and summary.json is a
view of the registry that :meth:`Registry.sync_summary` keeps in line (its ``is_champion`` flags)
and :func:`velocast.tracking.rebuild.rebuild_summary` regenerates.

Models are registered as ``bike-traffic-<type>``; the serving model carries the alias
``champion`` and the one before it ``previous-champion`` (aliases, never the deprecated stages).

A version is registered with the tag ``velocast_status=pending`` (atomically with the version) and
tagged ``complete`` only once its summary.json entry is written and its run is FINISHED (see
``velocast.lifecycle.training.train``). Lookups that pick a version by themselves (``latest``, ``resolve``
without a version, ``versions``) ignore pending ones, and a pending version cannot be promoted: a
training killed half-way never serves. Versions registered before this tag existed count as complete.

"Not found" and "failed" are told apart: only MLflow's ``RESOURCE_DOES_NOT_EXIST`` (and its
"alias not found") reads as absent (``None``, ``[]``, ``LookupError``); any other failure (server
down, timeout, permission) raises :class:`velocast.errors.DependencyUnavailable`, so "the registry
did not answer" is never mistaken for "there is no champion".

Without a champion, :meth:`Registry.serving` stands in the latest version that may serve: never a
test-mode model nor one that failed the baseline gate (:meth:`Registry.blockers`).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.exceptions import MlflowException

from velocast import models
from velocast.config import Settings, get_settings, redact_secrets
from velocast.errors import DependencyUnavailable, sqlite_write_failure
from velocast.models import registered_name
from velocast.tracking.mlflow_runs import configure, load_sklearn_model, silence_mlflow_logs
from velocast.tracking.summary import SummaryEntry, SummaryStore

if TYPE_CHECKING:
    from velocast.models.compiled import ServingModel
    from velocast.models.intervals import AdaptationCache
    from velocast.models.spec import ModelSpec

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous-champion"
_RUN_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
STATUS_TAG = "velocast_status"
PENDING = "pending"
COMPLETE = "complete"
ATTEMPT_TAG = "velocast_attempt"  # the training attempt (its liveness lock) that registered the version
TEST_MODE_TAG = "test_mode"  # "True" on a model trained on a small sample (--model-test, --test-mode)
GATE_TAG = "baseline_regression"  # "True" when the version failed the baseline gate at training


def is_not_found(exc: MlflowException) -> bool:
    """MLflow's "does not exist" (a registered model, a version, a run) and "alias ... not found"."""
    code = getattr(exc, "error_code", "")
    if code == "RESOURCE_DOES_NOT_EXIST":
        return True
    message = str(exc).lower()
    return code == "INVALID_PARAMETER_VALUE" and "alias" in message and "not found" in message


class NoServableModel(LookupError):
    """No champion and no registered version that may stand in for one."""


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


@dataclass
class LoadedModel:
    """A fitted pipeline ready to predict, with the registered version it came from (None: a bare URI)."""

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

    @functools.cached_property
    def serving(self) -> ServingModel | None:
        """This model compiled for the serving path (features from arrays), once per loaded model."""
        from velocast.models.compiled import ServingModel

        return ServingModel.of(self.pipeline)

    @functools.cached_property
    def adaptation(self) -> AdaptationCache:
        """The recent errors its forecasts follow, per store version (``velocast.lifecycle.serving.adaptation``)."""
        from velocast.models.intervals import AdaptationCache

        return AdaptationCache()

    @property
    def spec(self) -> ModelSpec:
        """Its family's spec (task, parameters, how it continues training)."""
        return models.get_spec(self.model_type)

    @property
    def has_intervals(self) -> bool:
        """True when the model serves calibrated prediction intervals."""
        return self.spec.task == "regression" and models.is_calibrated(self.pipeline)


class Registry:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        silence_mlflow_logs()
        with self._mlflow():
            configure(self.settings)
        # bound to this home's store, never to MLflow's process-wide URI (another home may set it meanwhile)
        self.client = mlflow.MlflowClient(tracking_uri=self.settings.tracking_uri)
        self.summary = SummaryStore(settings=self.settings)

    @contextmanager
    def _mlflow(self) -> Iterator[None]:
        """Run MLflow calls: "not found" comes out as the MlflowException it is, any other failure as
        ``DependencyUnavailable("mlflow", ...)`` (or the ``OSError`` of a read-only local database)."""
        try:
            yield
        except MlflowException as exc:
            if is_not_found(exc):
                raise
            raise self._failure(exc) from exc
        except (ConnectionError, TimeoutError) as exc:
            raise self._failure(exc) from exc
        except Exception as exc:
            # a transport error, or the local tracking database's own, that MLflow let through
            if type(exc).__module__.startswith(("requests", "urllib3", "sqlalchemy", "sqlite3")):
                raise self._failure(exc) from exc
            raise

    def _failure(self, exc: Exception) -> Exception:
        message = redact_secrets(str(exc) or type(exc).__name__, self.settings)
        uri = self.settings.tracking_uri
        if uri.startswith("sqlite:///"):
            local = sqlite_write_failure(message, uri[len("sqlite:///"):])
            if local is not None:
                return local
        return DependencyUnavailable("mlflow", message)

    # ------------------------------------------------------------------ reading
    def _ref(self, model_type: str, mv: Any, with_metrics: bool = False) -> ModelRef:
        metrics: dict[str, float] = {}
        if with_metrics and mv.run_id:
            try:
                with self._mlflow():
                    metrics = dict(self.client.get_run(mv.run_id).data.metrics)
            except MlflowException:  # the run was deleted: the version has no metrics to show
                metrics = {}
        return ModelRef(model_type=model_type, name=mv.name, version=str(mv.version), run_id=mv.run_id,
                        source=mv.source, aliases=list(getattr(mv, "aliases", []) or []),
                        created_at=mv.creation_timestamp, metrics=metrics, tags=dict(mv.tags or {}))

    def versions(self, model_type: str, with_metrics: bool = False, include_pending: bool = False) -> list[ModelRef]:
        name = registered_name(model_type)
        try:
            with self._mlflow():
                found = self.client.search_model_versions(f"name='{name}'")
        except MlflowException:  # no such registered model
            return []
        refs = [self._ref(model_type, mv, with_metrics) for mv in found]
        if not include_pending:
            refs = [r for r in refs if r.complete]
        return sorted(refs, key=lambda r: int(r.version))

    def by_alias(self, model_type: str, alias: str = CHAMPION, with_metrics: bool = False) -> ModelRef | None:
        """The version holding ``alias``; None only when MLflow says the alias (or the model) does not exist."""
        try:
            with self._mlflow():
                mv = self.client.get_model_version_by_alias(registered_name(model_type), alias)
        except MlflowException:
            return None
        return self._ref(model_type, mv, with_metrics)

    def champion(self, model_type: str, with_metrics: bool = False) -> ModelRef | None:
        return self.by_alias(model_type, CHAMPION, with_metrics)

    def get(self, model_type: str, version: str | int, with_metrics: bool = False) -> ModelRef:
        try:
            with self._mlflow():
                mv = self.client.get_model_version(registered_name(model_type), str(version))
        except MlflowException as exc:
            raise LookupError(f"{registered_name(model_type)} has no version {version}") from exc
        except DependencyUnavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, MlflowException) and cause.error_code == "INVALID_PARAMETER_VALUE":
                raise LookupError(f"{registered_name(model_type)} has no version {version}") from exc
            raise
        return self._ref(model_type, mv, with_metrics)

    def for_run(self, model_type: str, run_id: str) -> ModelRef:
        name = registered_name(model_type)
        # the id goes into an MLflow filter string: anything but an id's characters (a quote...) would
        # change the filter or break it, so it cannot name a run
        if not _RUN_ID.fullmatch(str(run_id)):
            raise LookupError(f"{str(run_id)[:80]!r} is not a run id (letters, digits, '-' and '_')")
        try:
            with self._mlflow():
                found = self.client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
        except MlflowException:
            found = []
        if not found:
            raise LookupError(f"run {run_id} has no registered version of {name}")
        return self._ref(model_type, max(found, key=lambda mv: int(mv.version)))

    def latest(self, model_type: str) -> ModelRef | None:
        refs = self.versions(model_type)
        return refs[-1] if refs else None

    def blockers(self, ref: ModelRef, entries: dict[str, SummaryEntry] | None = None) -> list[str]:
        """Why ``ref`` may not be champion without an explicit override (empty: it may).

        A test-mode model (trained on a small sample) and a version that failed the baseline gate
        (R² on test_baseline below the threshold) never serve or get promoted by themselves.
        Read from the version's tags, else from its summary.json entry (versions trained before
        the tags existed).
        """
        entry = None
        if ref.run_id and (TEST_MODE_TAG not in ref.tags or GATE_TAG not in ref.tags):
            entry = entries.get(ref.run_id) if entries is not None else self.summary.find(ref.run_id)
        test_mode = ref.tags.get(TEST_MODE_TAG, str(bool(entry and entry.test_mode))) == "True"
        failed = ref.tags.get(GATE_TAG, str(bool(entry and entry.baseline_regression))) == "True"
        out = []
        if test_mode:
            out.append(f"{ref.name} version {ref.version} is a test-mode model (trained on a small sample)")
        if failed:
            out.append(f"{ref.name} version {ref.version} failed the baseline gate (R² on test_baseline below "
                       f"{self.settings.r2_baseline_threshold:g} at training)")
        return out

    def serving(self, model_type: str, ignore_champion: bool = False,
                with_metrics: bool = False) -> tuple[ModelRef, bool]:
        """The version that serves ``model_type`` and whether it is the champion.

        The champion; only when the registry positively says there is none (or ``ignore_champion``:
        an interrupted first promotion), the latest complete version without :meth:`blockers`. A
        registry that does not answer raises ``DependencyUnavailable`` (never a fallback); nothing
        that may serve raises ``NoServableModel``.
        """
        champion = None if ignore_champion else self.champion(model_type, with_metrics)
        if champion is not None:
            return champion, True
        refs = self.versions(model_type)
        if not refs:
            raise NoServableModel(f"no {model_type} model is registered yet: train one "
                                  f"(`velocast train --model-type {model_type}` or POST /train)")
        entries = {e.run_id: e for e in self.summary.read()}
        for ref in reversed(refs):
            if not self.blockers(ref, entries):
                return ref, False
        why = "; ".join(b for ref in refs[-3:] for b in self.blockers(ref, entries))
        raise NoServableModel(f"no {model_type} champion, and no registered version may serve in its place ({why}): "
                              f"train a full model, or promote one explicitly (`velocast promote --model-type "
                              f"{model_type} --version N --force --reason ...`)")

    def resolve(self, model_type: str, version: str | int | None = None, run_id: str | None = None,
                alias: str | None = None) -> ModelRef:
        """A version by number, run, or alias; default: the version that serves (:meth:`serving`).

        Both a version and a run: the version, if it is one of that run's (else a ``ValueError``).
        """
        if version is not None:
            ref = self.get(model_type, version)
            if run_id is not None and ref.run_id != run_id:
                other = self.for_run(model_type, run_id)  # a run without a version: LookupError
                raise ValueError(f"version {version} and run {run_id} name different versions of {ref.name} (run "
                                 f"{run_id} is version {other.version}, version {version} is of run {ref.run_id}): "
                                 "give one of them")
            return ref
        if run_id is not None:
            return self.for_run(model_type, run_id)
        if alias is not None:
            ref = self.by_alias(model_type, alias)
            if ref is None:
                raise LookupError(f"{registered_name(model_type)} has no alias @{alias}")
            return ref
        return self.serving(model_type)[0]

    def load(self, ref: ModelRef) -> Any:
        """The fitted pipeline of a registered version (native scikit-learn object)."""
        with self._mlflow():
            return load_sklearn_model(self.client.get_model_version_download_uri(ref.name, ref.version))

    def load_model(self, ref: ModelRef) -> LoadedModel:
        """A registered version, loaded and ready to predict."""
        return LoadedModel(ref.model_type, self.load(ref), ref, ref.uri)

    # ------------------------------------------------------------------ writing
    def trained_days(self, ref: ModelRef) -> set[str] | None:
        """Paris days (ISO) the version's run trained on (its ``data/days.json``); None if not recorded."""
        recorded = self.run_json(ref.run_id, "data/days.json")
        return None if recorded is None else set(recorded.get("train_days", {}))  # None: an older velocast's run

    def run_json(self, run_id: str | None, path: str) -> dict[str, Any] | None:
        """The JSON artifact ``path`` of a run of this home's tracking store; None when the run or the
        artifact does not exist (listed, not guessed from a failed download). A tracking store or
        artifact store that fails to answer raises ``DependencyUnavailable``: callers that decide on
        it (which days a version never saw) must not read a failure as "not recorded"."""
        import json
        import posixpath
        import tempfile

        import mlflow.artifacts

        if not run_id:
            return None
        try:
            with self._mlflow():
                listed = {item.path for item in self.client.list_artifacts(run_id, posixpath.dirname(path) or None)}
        except MlflowException:  # not found: the run no longer exists
            return None
        if path not in listed:
            return None
        with tempfile.TemporaryDirectory() as folder:
            try:
                with self._mlflow():
                    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=folder,
                                                                tracking_uri=self.settings.tracking_uri)
                text = Path(local).read_text(encoding="utf-8")
            except (MlflowException, OSError) as exc:  # listed, yet unreadable: a failure, not an absence
                raise DependencyUnavailable("mlflow", f"artifact {path} of run {run_id}: {exc}") from exc
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ValueError(f"artifact {path} of run {run_id} is not JSON: {exc}") from exc

    def register(self, model_type: str, model_uri: str, run_id: str, tags: dict[str, str],
                 model_id: str | None = None) -> ModelRef:
        """A new version of ``bike-traffic-<type>`` from a logged model (``models:/<model_id>``)."""
        name = registered_name(model_type)
        try:
            with self._mlflow():
                self.client.create_registered_model(name, description=f"velocast {model_type} models")
        except DependencyUnavailable as exc:
            cause = exc.__cause__
            if not (isinstance(cause, MlflowException) and cause.error_code == "RESOURCE_ALREADY_EXISTS"):
                raise
        if model_id is None and model_uri.startswith("models:/") and "/" not in model_uri[len("models:/"):]:
            model_id = model_uri[len("models:/"):]
        # a tracking server refuses a ``models:/<model_id>`` source unless the model id is named too
        with self._mlflow():
            mv = self.client.create_model_version(name, model_uri, run_id=run_id,
                                                  tags={STATUS_TAG: PENDING, **tags}, model_id=model_id)
        return self._ref(model_type, mv)

    def mark_complete(self, model_type: str, version: str) -> None:
        """The training of ``version`` is over (summary entry written, run FINISHED): lookups may use it."""
        with self._mlflow():
            self.client.set_model_version_tag(registered_name(model_type), str(version), STATUS_TAG, COMPLETE)

    def delete_version(self, model_type: str, version: str) -> None:
        with self._mlflow():
            self.client.delete_model_version(registered_name(model_type), version)

    def sync_summary(self, model_type: str) -> bool:
        """Make summary.json's ``is_champion`` flags of ``model_type`` follow the champion alias; True if written.

        A champion whose run has no entry (summary.json lost or deleted) is logged and left to
        ``velocast summary rebuild``.
        """
        champion = self.champion(model_type)
        try:
            return self.summary.set_champion(model_type, champion.run_id if champion else None)
        except KeyError:
            log.warning("summary.json has no entry for run %s, the %s champion: `velocast summary rebuild` "
                        "regenerates the file from the registry", champion.run_id if champion else None, model_type)
            return False

    def set_alias(self, model_type: str, alias: str, version: str | None) -> None:
        """Point ``alias`` at ``version``; None removes the alias."""
        name = registered_name(model_type)
        if version is None:
            try:
                with self._mlflow():
                    self.client.delete_registered_model_alias(name, alias)
            except MlflowException:  # not set: nothing to remove
                pass
        else:
            with self._mlflow():
                self.client.set_registered_model_alias(name, alias, str(version))
