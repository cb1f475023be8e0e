"""``velocast summary rebuild``: summary.json regenerated from the registry, its one source.

Every complete registered version of every model type gives one entry: the entry its training
logged with the run (``summary/entry.json``), else one rebuilt from the run's tags and metrics (runs
of a velocast before that artifact). ``is_champion`` comes from the ``champion`` alias. Entries of
versions whose training is still running (``pending``) are kept as the file has them, so a
rebuild never loses an entry a training is writing at the same moment. Deleting summary.json and
rebuilding it gives back the same entries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from velocast.models import MODEL_TYPES
from velocast.tracking.registry import GATE_TAG, TEST_MODE_TAG, ModelRef, Registry
from velocast.tracking.summary import SummaryEntry

log = logging.getLogger(__name__)

ENTRY_ARTIFACT = "summary/entry.json"  # where a training logs its summary entry (``train._train``)


@dataclass
class RebuildReport:
    entries: int = 0
    from_artifact: int = 0
    from_run: int = 0
    kept_pending: int = 0
    champions: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)  # run ids in the old file that the registry does not hold

    def lines(self) -> list[str]:
        champions = ", ".join(f"{t} v{v}" for t, v in sorted(self.champions.items())) or "none"
        out = [f"summary.json rebuilt from the registry: {self.entries} entries ({self.from_artifact} as logged by "
               f"their training, {self.from_run} from their run's tags and metrics, {self.kept_pending} of trainings "
               f"still running kept); champions: {champions}"]
        if self.dropped:
            out.append(f"dropped {len(self.dropped)} entries whose run has no registered version: "
                       + ", ".join(self.dropped[:10]) + (" ..." if len(self.dropped) > 10 else ""))
        return out


def _from_run(registry: Registry, model_type: str, ref: ModelRef) -> SummaryEntry:
    """An entry rebuilt from the run's tags and metrics (and the version's tags)."""
    run = registry.client.get_run(ref.run_id)
    tags, metrics = run.data.tags, run.data.metrics

    def scope(prefix: str) -> dict[str, Any]:
        return {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}

    baseline, current, trained = scope("test_baseline_"), scope("test_current_"), scope("train_")
    model_uri = ref.source
    if model_uri.startswith("models:/") and "/" not in model_uri[len("models:/"):]:
        model_uri = registry.client.get_logged_model(model_uri[len("models:/"):]).artifact_location
    split = tags.get("split_version") or ref.tags.get("split_version")
    return SummaryEntry(
        timestamp=datetime.fromtimestamp(run.info.start_time / 1000, timezone.utc).isoformat(),
        model_type=model_type, env=tags.get("env", ref.tags.get("env", "dev")),
        test_mode=(tags.get("test_mode") or ref.tags.get(TEST_MODE_TAG)) == "True", run_id=ref.run_id or "",
        model_uri=model_uri, registered_model=ref.name, model_version=ref.version,
        horizon=tags.get("horizon"), data_source=tags.get("data_source"),
        split_version=int(split) if split and split.isdigit() else None,
        rmse=baseline.get("rmse"), mae=baseline.get("mae"), r2=baseline.get("r2"),
        double_evaluation_enabled=bool(current), r2_baseline=baseline.get("r2"), rmse_baseline=baseline.get("rmse"),
        r2_current=current.get("r2"), rmse_current=current.get("rmse"),
        baseline_regression=(ref.tags[GATE_TAG] == "True") if ref.tags.get(GATE_TAG) in ("True", "False") else None,
        train_metrics=trained, extra_metrics={k: v for k, v in baseline.items() if k not in ("rmse", "mae", "r2")})


def _logged(registry: Registry, ref: ModelRef) -> SummaryEntry | None:
    data = registry.run_json(ref.run_id, ENTRY_ARTIFACT)
    if data is None:  # a run of an earlier velocast: rebuilt from the run
        return None
    entry = SummaryEntry.from_dict(data)
    return entry if entry.model_version == ref.version else None


def rebuild_summary(registry: Registry | None = None) -> RebuildReport:
    """Regenerate summary.json from the registry (see the module docstring)."""
    registry = registry or Registry()
    report = RebuildReport()
    entries: list[SummaryEntry] = []
    pending_runs: set[str] = set()
    for model_type in MODEL_TYPES:
        champion = registry.champion(model_type)
        if champion is not None:
            report.champions[model_type] = champion.version
        for ref in registry.versions(model_type, include_pending=True):
            if not ref.complete:
                pending_runs.add(ref.run_id or "")
                continue
            entry = _logged(registry, ref)
            if entry is None:
                entry = _from_run(registry, model_type, ref)
                report.from_run += 1
            else:
                report.from_artifact += 1
            entry.is_champion = champion is not None and champion.version == ref.version
            entries.append(entry)
    entries.sort(key=lambda e: (e.timestamp, e.model_type, int(e.model_version or 0)))
    rebuilt = {e.run_id for e in entries}
    old = registry.summary.read()
    report.dropped = [e.run_id for e in old if e.run_id not in rebuilt and e.run_id not in pending_runs]

    def change(data: list[dict[str, Any]]) -> None:
        running = [d for d in data if d.get("run_id") in pending_runs and d.get("run_id") not in rebuilt]
        report.kept_pending = len(running)
        data[:] = [e.to_dict() for e in entries] + running

    registry.summary.update_all(change)
    report.entries = len(entries) + report.kept_pending
    log.info("%s", " ".join(report.lines()))
    return report
