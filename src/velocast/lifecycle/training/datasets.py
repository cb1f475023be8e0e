"""The datasets of a training run: what it trains on and the fixed sets it is scored on.

``data_source``:
- ``baseline``: ``train_baseline`` of the active split;
- ``current``: ``train_current`` (the first 80% of the days after the cutoff);
- ``reference``: the sliding window ``train_baseline`` + ``train_current`` (the original system's
  fine-tuning set).
``--data PATH`` trains on a file that is not ingested. Posted ``current_data`` (the API, the
weekly cycle's window) is split by time: its first 80% joins training, its latest 20% becomes
``test_current``.

Every training frame, whatever its origin, passes through ``training_rows``: it drops every row on
a day the model will be judged on (the split's ``test_baseline`` days and the days of the
``test_current`` in use) and every row of a sensor outage. No decision is ever made on a row the
model trained on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from velocast.choices import DATA_SOURCES, DEFAULT_DATA_SOURCE
from velocast.config import Settings, get_settings
from velocast.data import splits, store
from velocast.data.ingest import read_table, validate
from velocast.data.schema import to_paris
from velocast.data.splits import SplitRecord, frame_hash, paris_day, split_by_time

if TYPE_CHECKING:
    from velocast.tracking.registry import ModelRef, Registry

log = logging.getLogger(__name__)

MODEL_TEST_ROWS = 1000
MODEL_TEST_EVAL_ROWS = 3000


@dataclass
class Dataset:
    name: str
    frame: pd.DataFrame
    source: str

    @property
    def content_hash(self) -> str:
        return frame_hash(self.frame)


@dataclass
class Datasets:
    train: Dataset
    test_baseline: Dataset
    test_current: Dataset | None
    split: SplitRecord | None
    notes: list[str] = field(default_factory=list)
    held_out: set[str] = field(default_factory=set)  # Paris days (ISO) the model is judged on
    # a model continued from another (the weekly cycle's ``continue``): the days that model's trees were
    # trained on (day -> rows) and its run, recorded with this run's own days
    trained_before: dict[str, int] = field(default_factory=dict)
    continued_from: str | None = None

    @property
    def history(self) -> pd.DataFrame:
        """Labelled rows that may serve as history for features (the store adds the rest)."""
        return self.train.frame


def read_rows(path: Path | str) -> pd.DataFrame:
    """Canonical rows of a file (any supported format) without ingesting it; bad rows raise."""
    result = validate(read_table(path), known_counters=store.counters())
    if not result.rejected.empty:
        first = result.rejected.iloc[0]
        log.warning("%s: %d rows rejected (first: row %s, %s)", path, len(result.rejected),
                    first["source_row"], first["detail"])
    return result.accepted


def held_out_days(split: SplitRecord | None, *test_sets: pd.DataFrame | None) -> set[str]:
    """Paris days (ISO) a model is judged on: the split's test_baseline days and those of ``test_sets``."""
    days = {str(d) for d in split.test_days} if split is not None else set()
    for frame in test_sets:
        if frame is not None and len(frame):
            days |= {str(d) for d in paris_day(frame["timestamp"]).unique()}
    return days


def training_rows(frame: pd.DataFrame, held_out: set[str], settings: Settings | None = None,
                  notes: list[str] | None = None) -> pd.DataFrame:
    """``frame`` without its rows on held-out days, sensor-outage rows and degraded sensor days (the one filter)."""
    from velocast.data.quality import degraded_mask
    from velocast.lifecycle.inputs import outage_flags

    settings = settings or get_settings()
    if frame.empty:
        return frame
    on_test_day = paris_day(frame["timestamp"]).astype(str).isin(held_out).to_numpy() if held_out \
        else np.zeros(len(frame), bool)
    outage = outage_flags(frame, settings) if "bike_count" in frame else np.zeros(len(frame), bool)
    if notes is not None and on_test_day.any():
        notes.append(f"{int(on_test_day.sum())} rows on held-out test days left out of training")
    if notes is not None and (outage & ~on_test_day).any():
        notes.append(f"{int((outage & ~on_test_day).sum())} rows in sensor outages (runs of >= "
                     f"{settings.outage_min_zero_hours} zero hours) left out of training")
    degraded = degraded_mask(frame, settings.degraded_day_share) if "bike_count" in frame \
        else np.zeros(len(frame), bool)
    degraded &= ~(on_test_day | outage)
    if notes is not None and degraded.any():
        notes.append(f"{int(degraded.sum())} rows on degraded sensor days (a counter's total below "
                     f"{settings.degraded_day_share:.0%} of its usual given the city that day) left out of training")
    keep = ~(on_test_day | outage | degraded)
    return frame if keep.all() else frame[keep].reset_index(drop=True)


# calibration days are at most this share of the training days (the point model needs the rest)
MAX_CALIBRATION_SHARE = 0.2


def calibration_days(frame: pd.DataFrame, days: int) -> list[str]:
    """The latest ``days`` Paris days (ISO) of a training frame, where prediction intervals are calibrated.

    Time-ordered: the calibration days come after every day the point model is fitted on, like the
    days it will forecast. At most ``MAX_CALIBRATION_SHARE`` of the frame's days; none for a frame
    of fewer than 5 days. The frame holds no test day (``training_rows``), so neither do they.
    """
    if frame.empty:
        return []
    all_days = sorted({str(d) for d in paris_day(frame["timestamp"]).unique()})
    n = min(int(days), int(len(all_days) * MAX_CALIBRATION_SHARE))
    return all_days[-n:] if n > 0 else []


def _sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    if len(frame) <= rows:
        return frame
    return frame.sample(rows, random_state=seed).sort_values(["timestamp", "counter_id"]).reset_index(drop=True)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["timestamp", "counter_id"], kind="stable").reset_index(drop=True)


def load_datasets(data_source: str = DEFAULT_DATA_SOURCE, settings: Settings | None = None,
                  data_path: Path | str | None = None, current_data: pd.DataFrame | None = None,
                  model_test: bool = False, seed: int = 42, split: SplitRecord | None = None) -> Datasets:
    settings = settings or get_settings()
    if data_source not in DATA_SOURCES:
        raise ValueError(f"unknown data source {data_source!r}: expected one of {', '.join(DATA_SOURCES)}")
    notes: list[str] = []
    if data_path is not None:
        file_rows = read_rows(data_path)
        if file_rows.empty:
            raise ValueError(f"{data_path}: no valid rows to train on")
        split = split or splits.active_split(settings)
        if split is None:
            # nothing recorded: hold out whole days of the file itself
            test_days = splits.choose_test_days(list(paris_day(file_rows["timestamp"]).unique()), 0.2, seed)
            train, test_b = splits.split_baseline(file_rows, test_days)
            test_baseline = Dataset("test_baseline", test_b, f"{data_path} (held-out days)")
            test_current = None
            notes.append("no split recorded: test_baseline = whole held-out days of the file")
        else:
            test_baseline = Dataset("test_baseline", splits.load_split("test_baseline", split, settings),
                                    f"split v{split.version}")
            test_c = splits.load_split("test_current", split, settings)
            test_current = Dataset("test_current", test_c, f"split v{split.version}") if len(test_c) else None
            train = file_rows
        train_ds = Dataset("train_file", _sorted(train), str(data_path))
    else:
        split = split or splits.ensure_split(settings)
        source = f"split v{split.version}"
        train_b = splits.load_split("train_baseline", split, settings)
        test_baseline = Dataset("test_baseline", splits.load_split("test_baseline", split, settings), source)
        train_c, test_c = splits.split_by_time(splits.load_split("current", split, settings),
                                               split.current_test_fraction)
        test_current = Dataset("test_current", test_c, f"store after {split.cutoff}") if len(test_c) else None
        if data_source == "baseline":
            train_ds = Dataset("train_baseline", train_b, source)
        elif data_source == "current":
            if train_c.empty:
                raise ValueError(f"no current data after the cutoff {split.cutoff}: ingest newer data first")
            train_ds = Dataset("train_current", train_c, f"store after {split.cutoff}")
        else:
            train_ds = Dataset("train_reference", _sorted(pd.concat([train_b, train_c], ignore_index=True)),
                               f"{source} + store after {split.cutoff}")
    if current_data is not None and not current_data.empty:
        posted_train, posted_test = split_by_time(_sorted(current_data), 0.2)
        train_ds = Dataset(f"{train_ds.name}+posted_current",
                           _sorted(pd.concat([train_ds.frame, posted_train], ignore_index=True)
                                   .drop_duplicates(["counter_id", "timestamp"], keep="last")),
                           f"{train_ds.source} + posted rows")
        test_current = Dataset("test_current", posted_test, "posted rows (latest 20% of days)")
        notes.append(f"posted current data: {len(posted_train)} rows trained on, {len(posted_test)} held out")
    held_out = held_out_days(split, test_baseline.frame, test_current.frame if test_current else None)
    train_ds = Dataset(train_ds.name, training_rows(train_ds.frame, held_out, settings, notes), train_ds.source)
    if model_test:
        train_ds = Dataset(train_ds.name, _sample(train_ds.frame, MODEL_TEST_ROWS, seed), train_ds.source + " (sample)")
        test_baseline = Dataset("test_baseline", _sample(test_baseline.frame, MODEL_TEST_EVAL_ROWS, seed),
                                test_baseline.source + " (sample)")
        if test_current is not None:
            test_current = Dataset("test_current", _sample(test_current.frame, MODEL_TEST_EVAL_ROWS, seed),
                                   test_current.source + " (sample)")
        notes.append(f"test mode: {MODEL_TEST_ROWS} training rows, at most {MODEL_TEST_EVAL_ROWS} per test set")
    if train_ds.frame.empty:
        raise ValueError("no training rows")
    return Datasets(train_ds, test_baseline, test_current, split, notes, held_out)


def days_unseen_by(registry: Registry, ref: ModelRef, days: set[str], settings: Settings) -> set[str]:
    """The ``days`` (Paris, ISO) the version ``ref`` never trained on.

    Read from its run's record of training days; for a version trained before that record existed,
    assume it trained on every day up to its data end except the test days of its split (fail closed).
    """
    trained = registry.trained_days(ref)
    if trained is not None:
        return days - trained
    end = ref.tags.get("data_end")
    held = set()
    if ref.tags.get("split_version"):
        try:
            held = set(splits.get_split(int(ref.tags["split_version"]), settings).test_days)
        except (splits.SplitError, ValueError):
            held = set()
    last = str(to_paris(end, naive="utc").date()) if end else "9999-12-31"
    return {d for d in days if d > last or d in held}
