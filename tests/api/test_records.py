"""The serving fast path of ``to_rows`` makes exactly the rows of the full (ingest) validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.api.conftest import settings_for
from velocast.api.records import RecordsRejected, _canonical, _fast_rows, _validated_rows, to_rows
from velocast.api.schemas import PredictRecord
from velocast.data import store


@pytest.fixture(scope="module")
def known(empty_home: Path) -> pd.DataFrame:
    return store.counters(settings_for(empty_home))


def _records(rows: pd.DataFrame, seed: int) -> list[dict[str, Any]]:
    """Plain serving records: offsets in three spellings, weather and coordinates on some."""
    rng = np.random.default_rng(seed)
    out = []
    for i, row in enumerate(rows.itertuples(index=False)):
        stamp = pd.Timestamp(row.date).tz_localize("UTC")
        text = [stamp.tz_convert("Europe/Paris").isoformat(), stamp.isoformat().replace("+00:00", "Z"),
                stamp.tz_convert("Europe/Paris").isoformat(sep=" ")][i % 3]
        record: dict[str, Any] = {"counter_id": row.counter_id, "timestamp": text}
        if rng.random() < 0.5:
            record["temperature_c"] = float(rng.uniform(-5, 35))
        if rng.random() < 0.3:
            record["rain_mm"] = float(rng.uniform(0, 5))
        if rng.random() < 0.3:
            record["latitude"], record["longitude"] = 48.85 + rng.uniform(-0.05, 0.05), 2.35
        out.append(record)
    return out


def _both(records: list[dict[str, Any]], known: pd.DataFrame) -> tuple[Any, Any]:
    parsed = [PredictRecord.model_validate(r) for r in records]
    canonical = [_canonical(r) for r in parsed]
    return _fast_rows(canonical, known), _validated_rows(parsed, canonical, known, False, "records")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_rows_equal_the_validated_rows(counter_rows: pd.DataFrame, known: pd.DataFrame, seed: int) -> None:
    rows = counter_rows.sample(60, random_state=seed).drop_duplicates(["counter_id", "date"])
    records = _records(rows, seed)
    fast, full = _both(records, known)
    assert fast is not None
    pd.testing.assert_frame_equal(fast.rows, full.rows)
    assert fast.row_of.tolist() == full.row_of.tolist() and fast.duplicate_of == full.duplicate_of
    # across the autumn DST change too: 02:00 Paris time twice, told apart by the offset
    fold = [{"counter_id": rows["counter_id"].iloc[0], "timestamp": t}
            for t in ("2020-10-25T02:00:00+02:00", "2020-10-25T02:00:00+01:00", "2020-10-25T03:00:00+01:00")]
    fast, full = _both(fold, known)
    assert fast is not None and fast.rows["timestamp"].nunique() == 3
    pd.testing.assert_frame_equal(fast.rows, full.rows)


@pytest.mark.parametrize("change", [
    {"timestamp": "2021-08-02T08:00:00"},  # naive: the ingest's DST rules apply
    {"timestamp": "2021-08-02T08:30:00+02:00"},  # not a whole hour
    {"timestamp": "1990-08-02T08:00:00+02:00"},  # out of range
    {"timestamp": "next tuesday+02:00"},
    {"counter_id": "unknown-counter"},  # needs coordinates
    {"latitude": 40.0, "longitude": 2.35},  # outside Île-de-France
    {"latitude": 48.85},  # one coordinate only
    {"bike_count": 3.0},  # labelled rows go through the validation
    {"date": "2021-08-02 06:00:00", "timestamp": None},  # naive UTC
])
def test_anything_not_plain_takes_the_full_validation(counter_rows: pd.DataFrame, known: pd.DataFrame,
                                                      change: dict[str, Any]) -> None:
    plain = _records(counter_rows.head(3), 0)
    bad = {k: v for k, v in {**plain[1], **change}.items() if v is not None}
    parsed = [PredictRecord.model_validate(r) for r in (plain[0], bad, plain[2])]
    fast = _fast_rows([_canonical(r) for r in parsed], known)
    assert fast is None
    try:  # and to_rows answers as it always did: rows or the named problem
        converted = to_rows(parsed, settings_for(Path(".")), known)
        assert len(converted.row_of) == 3
    except RecordsRejected as exc:
        assert [e["index"] for e in exc.errors] == [1]


def test_a_counter_hour_given_twice_is_carried_by_its_first_record(counter_rows: pd.DataFrame,
                                                                  known: pd.DataFrame) -> None:
    """Two clients asking for the same counter-hour in one micro-batch keep the fast path."""
    records = _records(counter_rows.head(2), 0)
    fast, full = _both([*records, records[0]], known)
    assert fast is not None and fast.duplicate_of == full.duplicate_of == {2: 0}
    assert fast.row_of.tolist() == [0, 1, 0] and len(fast.served) == 2
    per_record = [rows.rows.iloc[rows.row_of].reset_index(drop=True) for rows in (fast, full)]
    pd.testing.assert_frame_equal(*per_record)
    # the same counter-hour with other values: left to the full validation
    other = {**records[0], "temperature_c": 31.5}
    fast, full = _both([*records, other], known)
    assert fast is None and full.duplicate_of == {2: 0}
