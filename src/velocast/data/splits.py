"""Train/test splits that never leak time.

- ``train_baseline`` / ``test_baseline``: the data before a *cutoff*; ``test_baseline`` is made of
  whole days (Europe/Paris) spread evenly across the period (the period is cut into equal chunks
  and one seeded random day of each chunk is held out), so no hour of a test day is in training.
  Both are snapshotted to Parquet with their content hashes: they stay fixed for the life of the
  baseline version, whatever is ingested later.
- ``current``: everything in the store after the cutoff, split by time into ``train_current``
  (the first 80% of its days) and ``test_current`` (the latest 20%).

A quarterly retrain records a new baseline *version* (a later cutoff); old versions are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from velocast import progress
from velocast.config import PARIS_TZ, Settings, get_settings
from velocast.data import store
from velocast.data.schema import CANONICAL_COLUMNS
from velocast.fileio import atomic_write_json, atomic_write_parquet, file_lock

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train_baseline", "test_baseline", "current", "train_current", "test_current")


class SplitError(ValueError):
    """A split cannot be made or loaded (no data, unknown version, altered snapshot...)."""


@dataclass
class SplitRecord:
    version: int
    cutoff: str
    test_fraction: float
    current_test_fraction: float
    seed: int
    created_at: str
    baseline_start: str
    baseline_end: str
    test_days: list[str]
    sizes: dict[str, int]
    hashes: dict[str, str]
    parent_version: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def cutoff_timestamp(self) -> pd.Timestamp:
        return pd.Timestamp(self.cutoff).tz_localize(PARIS_TZ)


# --------------------------------------------------------------------------- pure rules
def frame_hash(frame: pd.DataFrame) -> str:
    """Content hash of rows (order-independent: rows are sorted by counter and time first)."""
    if frame.empty:
        return hashlib.sha256(b"").hexdigest()
    cols = [c for c in CANONICAL_COLUMNS if c in frame.columns] or list(frame.columns)
    ordered = frame[cols].sort_values([c for c in ("counter_id", "timestamp") if c in cols] or cols)
    hashed = pd.util.hash_pandas_object(ordered, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def paris_day(timestamps: pd.Series) -> pd.Series:
    return timestamps.dt.tz_convert(PARIS_TZ).dt.date


def choose_test_days(days: list[date], test_fraction: float, seed: int) -> list[date]:
    """One seeded random day in each of ``round(n * fraction)`` equal consecutive chunks of days.

    At least one test day and one training day: 2 days of data are the minimum.
    """
    if not 0 < test_fraction < 1:
        raise SplitError(f"test fraction must be between 0 and 1, got {test_fraction}")
    days = sorted(set(days))
    if len(days) < 2:
        raise SplitError(f"need at least 2 days of data to hold whole days out for testing; found {len(days)}")
    n_test = min(len(days) - 1, max(1, int(round(len(days) * test_fraction))))  # >= 1 test and 1 training day
    rng = np.random.default_rng(seed)
    chunks = np.array_split(np.arange(len(days)), n_test)
    return sorted(days[int(rng.choice(chunk))] for chunk in chunks)


def split_baseline(frame: pd.DataFrame, test_days: list[date]) -> tuple[pd.DataFrame, pd.DataFrame]:
    is_test = paris_day(frame["timestamp"]).isin(set(test_days)).to_numpy()
    return frame[~is_test].reset_index(drop=True), frame[is_test].reset_index(drop=True)


def split_by_time(frame: pd.DataFrame, test_fraction: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """First (1 - fraction) of the days for training, the latest days for testing (whole days)."""
    if frame.empty:
        return frame, frame
    days = sorted(paris_day(frame["timestamp"]).unique())
    n_test = min(len(days) - 1, max(1, int(round(len(days) * test_fraction))))  # >= 1 test and 1 training day
    if len(days) == 1:
        n_test = 1
    first_test = days[-n_test]
    is_test = (paris_day(frame["timestamp"]) >= first_test).to_numpy()
    return frame[~is_test].reset_index(drop=True), frame[is_test].reset_index(drop=True)


def default_cutoff(first: pd.Timestamp, last: pd.Timestamp) -> date:
    """Keep the last 30 days as 'current', unless that leaves less than half the span as baseline."""
    first_day, last_day = first.tz_convert(PARIS_TZ).date(), last.tz_convert(PARIS_TZ).date()
    halfway = first_day + (last_day - first_day) / 2
    return max(last_day - timedelta(days=29), halfway + timedelta(days=1))


# --------------------------------------------------------------------------- recorded splits
def _version_dir(settings: Settings, version: int) -> Path:
    return settings.splits_dir / f"v{version}"


def list_versions(settings: Settings | None = None) -> list[SplitRecord]:
    settings = settings or get_settings()
    out = []
    for path in sorted(settings.splits_dir.glob("v*/split.json"), key=lambda p: int(p.parent.name[1:])):
        out.append(SplitRecord(**json.loads(path.read_text(encoding="utf-8"))))
    return out


def active_split(settings: Settings | None = None) -> SplitRecord | None:
    settings = settings or get_settings()
    pointer = settings.splits_dir / "active.json"
    if not pointer.exists():
        return None
    return get_split(json.loads(pointer.read_text(encoding="utf-8"))["version"], settings)


def get_split(version: int, settings: Settings | None = None) -> SplitRecord:
    settings = settings or get_settings()
    path = _version_dir(settings, version) / "split.json"
    if not path.exists():
        raise SplitError(f"no recorded split version {version} under {settings.splits_dir}")
    return SplitRecord(**json.loads(path.read_text(encoding="utf-8")))


def record_split(cutoff: date | str | None = None, test_fraction: float = 0.2, seed: int = 42,
                 current_test_fraction: float = 0.2, settings: Settings | None = None,
                 parent_version: int | None = None, notes: list[str] | None = None,
                 held_out: list[str] | None = None) -> SplitRecord:
    """Split the store's data before ``cutoff`` and record it as a new, active baseline version.

    ``parent_version``: the baseline this one merges (its test days stay held out, new ones are drawn
    from the added period); ``held_out``: more days (ISO) to hold out, e.g. the parent's test_current
    days, which no model of the parent trained on."""
    settings = settings or get_settings()
    latest = store.latest_timestamp(settings)
    if latest is None:
        raise SplitError("the store is empty: ingest or generate data first (velocast data ingest)")
    if cutoff is None:
        cutoff = default_cutoff(store.counters(settings)["first_seen"].min(), latest)
        log.info("no cutoff given: using %s (the last 30 days are 'current')", cutoff)
    cutoff_day = pd.Timestamp(cutoff).date()
    progress.step(f"reading the counts before {cutoff_day} (the baseline)")
    baseline = store.query_counts(end=pd.Timestamp(cutoff_day), settings=settings)
    if baseline.empty:
        raise SplitError(f"no data before the cutoff {cutoff_day}")
    days = list(paris_day(baseline["timestamp"]).unique())
    if parent_version is not None:
        # a merged baseline keeps its parent's test days held out, plus new ones from the added period
        parent = get_split(parent_version, settings)
        kept = [date.fromisoformat(d) for d in parent.test_days]
        added = [d for d in days if d >= date.fromisoformat(parent.cutoff)]
        test_days = sorted(set(kept) | set(choose_test_days(added, test_fraction, seed) if len(added) >= 2 else []))
    else:
        test_days = choose_test_days(days, test_fraction, seed)
    if held_out:
        test_days = sorted(set(test_days) | ({date.fromisoformat(d) for d in held_out} & set(days)))
    train, test = split_baseline(baseline, test_days)
    progress.step(f"writing the split snapshot: {len(test_days)} whole test days, content hashes")
    with file_lock(settings.locks_dir / "splits.lock"):
        versions = [r.version for r in list_versions(settings)]
        version = max(versions, default=0) + 1
        folder = _version_dir(settings, version)
        atomic_write_parquet(train, folder / "train_baseline.parquet")
        atomic_write_parquet(test, folder / "test_baseline.parquet")
        record = SplitRecord(
            version=version, cutoff=cutoff_day.isoformat(), test_fraction=test_fraction,
            current_test_fraction=current_test_fraction, seed=seed,
            created_at=datetime.now(timezone.utc).isoformat(),
            baseline_start=str(baseline["timestamp"].min()), baseline_end=str(baseline["timestamp"].max()),
            test_days=[d.isoformat() for d in test_days],
            sizes={"train_baseline": len(train), "test_baseline": len(test)},
            hashes={"train_baseline": frame_hash(train), "test_baseline": frame_hash(test)},
            parent_version=parent_version, notes=notes or [],
        )
        atomic_write_json(folder / "split.json", asdict(record))
        activate(version, settings)
    log.info("recorded split v%d: cutoff %s, %d train / %d test rows, %d test days", version,
             record.cutoff, len(train), len(test), len(test_days))
    return record


def activate(version: int, settings: Settings | None = None) -> None:
    """Make the recorded split ``version`` the active one (atomic)."""
    settings = settings or get_settings()
    get_split(version, settings)  # it must exist
    atomic_write_json(settings.splits_dir / "active.json", {"version": version})


def ensure_split(settings: Settings | None = None) -> SplitRecord:
    """The active split, or a default one made and recorded now (right after a first ingest)."""
    settings = settings or get_settings()
    return active_split(settings) or record_split(settings=settings, notes=["default split"])


def load_split(name: str, record: SplitRecord | None = None, settings: Settings | None = None) -> pd.DataFrame:
    """Rows of one named split of a baseline version (default: the active one)."""
    settings = settings or get_settings()
    if name not in SPLIT_NAMES:
        raise SplitError(f"unknown split {name!r}: expected one of {', '.join(SPLIT_NAMES)}")
    record = record or ensure_split(settings)
    if name in ("train_baseline", "test_baseline"):
        path = _version_dir(settings, record.version) / f"{name}.parquet"
        frame = pd.read_parquet(path)
        frame["timestamp"] = pd.to_datetime(frame["timestamp"]).dt.tz_convert(PARIS_TZ)
        if frame_hash(frame) != record.hashes[name]:
            raise SplitError(f"{path} does not match its recorded hash: the snapshot was altered")
        return frame
    current = store.query_counts(start=record.cutoff_timestamp, settings=settings)
    if name == "current":
        return current
    train, test = split_by_time(current, record.current_test_fraction)
    return train if name == "train_current" else test


def describe(record: SplitRecord, settings: Settings | None = None) -> dict:
    """Sizes and periods of every split of a version (for the CLI and the UI)."""
    settings = settings or get_settings()
    current = load_split("current", record, settings)
    train_c, test_c = split_by_time(current, record.current_test_fraction)
    def period(f: pd.DataFrame) -> str:
        return "-" if f.empty else f"{f['timestamp'].min().date()} .. {f['timestamp'].max().date()}"
    return {
        "version": record.version, "cutoff": record.cutoff,
        "train_baseline": {"rows": record.sizes["train_baseline"], "period": f"{record.baseline_start[:10]} .. {record.baseline_end[:10]}"},
        "test_baseline": {"rows": record.sizes["test_baseline"], "days": len(record.test_days)},
        "train_current": {"rows": len(train_c), "period": period(train_c)},
        "test_current": {"rows": len(test_c), "period": period(test_c)},
    }
