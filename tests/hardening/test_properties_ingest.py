"""Property-based tests of ``ingest.validate`` and the store upsert (hypothesis).

Generated tables mix valid rows with every kind of bad value the Paris files have shown or could
show: negative, NaN, infinite and text counts; unparseable, naive, offset, non-whole-hour
timestamps, including the two DST days of the data (2020-10-25, the repeated hour 02:00, and
2021-03-28, the missing hour 02:00); coordinates inside and outside Île-de-France, garbled or
missing; and duplicated rows with equal or different counts. Whatever the mix:

- nothing is lost: accepted + rejected + merged identical duplicates == rows read, and the row
  positions of accepted and rejected rows are disjoint;
- every rejected row carries a known reason and a detail naming the field;
- accepted rows satisfy the canonical schema (counts >= 0 and finite, Europe/Paris whole hours,
  coordinates in Île-de-France) and no (counter, hour) appears twice;
- upserting the accepted rows into a store twice adds and updates nothing the second time.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from tests.hardening.conftest import properties
from velocast.config import PARIS_TZ, Settings
from velocast.data import schema as S
from velocast.data import store
from velocast.data.ingest import RawTable, validate

REASONS = {S.REASON_MISSING_COUNTER, S.REASON_COUNT_NOT_NUMBER, S.REASON_COUNT_NEGATIVE, S.REASON_BAD_TIMESTAMP,
           S.REASON_NOT_WHOLE_HOUR, S.REASON_DST_GAP, S.REASON_BAD_COORDINATES, S.REASON_OUTSIDE_IDF,
           S.REASON_CONFLICTING_DUPLICATE}
COUNTERS = ["100003096-353242251", "100047548-103047548", "300014702-353245971", " ", ""]
# the two DST days of the real data, and an ordinary summer and winter day
DAYS = ["2020-10-25", "2021-03-28", "2021-06-15", "2021-01-12"]
BAD_TIMESTAMPS = ["", "not a date", "2021-13-01T00:00:00", "2021-02-30 10:00:00", "NaT", "tomorrow", "2021-06-15T",
                  "12:00", "2021-06-15T25:00:00+02:00"]
BAD_COUNTS = ["NaN", "nan", "", "abc", "inf", "-inf", "1e400", "--3", "None", "12 bikes"]


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    day = draw(st.sampled_from(DAYS))
    hour = draw(st.one_of(st.sampled_from([1, 2, 3]), st.integers(0, 23)))  # often around the DST switch
    kind = draw(st.sampled_from(["offset", "offset", "utc", "naive", "naive", "dst", "minutes", "bad"]))
    if kind == "dst":  # the repeated and the missing local hour, naive or with an offset
        return draw(st.sampled_from(["2020-10-25 02:00:00", "2020-10-25T02:00:00", "2020-10-25T02:00:00+02:00",
                                     "2020-10-25T02:00:00+01:00", "2021-03-28 02:00:00", "2021-03-28T02:00:00",
                                     "2021-03-28T02:00:00+01:00", "2021-03-28T03:00:00+02:00"]))
    if kind == "offset":
        offset = draw(st.sampled_from(["+01:00", "+02:00", "+0200", "-05:00"]))
        return f"{day}T{hour:02d}:00:00{offset}"
    if kind == "utc":
        return f"{day}T{hour:02d}:00:00Z"
    if kind == "naive":
        sep = draw(st.sampled_from(["T", " "]))
        return f"{day}{sep}{hour:02d}:00:00"
    if kind == "minutes":
        minute = draw(st.integers(1, 59))
        return f"{day}T{hour:02d}:{minute:02d}:00+01:00"
    return draw(st.sampled_from(BAD_TIMESTAMPS))


counts = st.one_of(
    st.integers(0, 3000).map(str),
    st.floats(0, 3000, allow_nan=False).map(lambda x: f"{x:.2f}"),
    st.floats(0, 3000, allow_nan=False).map(lambda x: f"{x:.1f}".replace(".", ",")),  # French decimal comma
    st.integers(-500, -1).map(str),
    st.sampled_from(BAD_COUNTS),
)
inside = st.tuples(st.floats(48.2, 49.1), st.floats(1.5, 3.5))
outside = st.one_of(st.tuples(st.floats(-89, 48.0), st.floats(-179, 179)),
                    st.tuples(st.floats(48.2, 49.1), st.floats(3.7, 20)),
                    st.tuples(st.floats(49.4, 89), st.floats(1.5, 3.5)))


@st.composite
def coordinates(draw: st.DrawFn) -> tuple[str, str]:
    kind = draw(st.sampled_from(["in", "in", "in", "out", "garbled", "missing"]))
    if kind in ("in", "out"):
        lat, lon = draw(inside if kind == "in" else outside)
        return f"{lat:.5f}", f"{lon:.5f}"
    if kind == "garbled":
        return draw(st.sampled_from([("x", "2.35"), ("48.85", "east"), ("48,85", "")]))
    return "", ""


@st.composite
def rows(draw: st.DrawFn) -> dict[str, str]:
    lat, lon = draw(coordinates())
    return {"counter_id": draw(st.sampled_from(COUNTERS[:3]) if draw(st.integers(0, 9)) else st.sampled_from(COUNTERS)),
            "timestamp": draw(timestamps()), "bike_count": draw(counts), "latitude": lat, "longitude": lon}


@st.composite
def tables(draw: st.DrawFn) -> RawTable:
    base = draw(st.lists(rows(), min_size=1, max_size=25))
    out = list(base)
    # duplicated rows: exact copies, or the same counter-hour with another count
    for i in draw(st.lists(st.integers(0, len(base) - 1), max_size=6)):
        copy = dict(base[i])
        if draw(st.booleans()):
            copy["bike_count"] = draw(counts)
        out.insert(draw(st.integers(0, len(out))), copy)
    frame = pd.DataFrame(out).replace("", np.nan)
    if draw(st.booleans()):  # the open-data style "lat,lon" column instead of two columns
        frame["coordinates"] = frame["latitude"].fillna("") + "," + frame["longitude"].fillna("")
        frame = frame.drop(columns=["latitude", "longitude"])
    naive_tz = draw(st.sampled_from([PARIS_TZ, "UTC"]))
    return RawTable(frame, "tidy", Path("<generated>"), {c: c for c in frame.columns}, naive_timezone=naive_tz)


def check_validated(raw: RawTable):
    result = validate(raw)
    accepted, rejected = result.accepted, result.rejected
    n = len(raw.frame)
    # nothing lost
    assert result.rows_read == n
    assert len(accepted) + len(rejected) + result.identical_duplicates == n
    kept = set(result.accepted_positions.tolist())
    thrown = set((rejected["source_row"].astype(int) - 1).tolist()) if len(rejected) else set()
    assert len(kept) == len(accepted) and len(thrown) == len(rejected) and not kept & thrown
    assert kept | thrown <= set(range(n))
    # every rejection is explained
    for reason, detail in zip(rejected.get("reason", []), rejected.get("detail", [])):
        assert reason in REASONS, reason
        assert isinstance(detail, str) and detail.strip() and "expected" in detail, detail
    # the accepted rows are canonical
    S.CANONICAL_SCHEMA.validate(accepted)
    if len(accepted):
        assert str(accepted["timestamp"].dt.tz) == PARIS_TZ
        assert np.isfinite(accepted["bike_count"]).all() and (accepted["bike_count"] >= 0).all()
        assert accepted["latitude"].between(*S.IDF_LATITUDE).all()
        assert accepted["longitude"].between(*S.IDF_LONGITUDE).all()
        assert (accepted["timestamp"].dt.minute == 0).all() and (accepted["timestamp"].dt.second == 0).all()
        assert not accepted.duplicated(["counter_id", "timestamp"]).any()
        assert accepted["counter_id"].map(lambda c: isinstance(c, str) and c.strip() == c and c != "").all()
    return result


@properties(max_examples=150)
@given(tables())
def test_validate_loses_nothing_and_accepts_only_canonical_rows(raw: RawTable) -> None:
    check_validated(raw)


@properties(max_examples=40)
@given(tables())
def test_ingesting_the_accepted_rows_twice_adds_nothing(raw: RawTable) -> None:
    accepted = check_validated(raw).accepted
    if accepted.empty:
        return
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(home=Path(folder))
        first = store.upsert_counts(accepted, settings)
        assert (first.added, first.updated, first.unchanged) == (len(accepted), 0, 0)
        second = store.upsert_counts(accepted, settings)
        assert (second.added, second.updated, second.unchanged) == (0, 0, len(accepted))
        stored = store.query_counts(settings=settings)
        assert len(stored) == len(accepted)
        # what comes back is what went in (same instants, counts and coordinates)
        left = accepted.sort_values(["counter_id", "timestamp"]).reset_index(drop=True)
        right = stored.sort_values(["counter_id", "timestamp"]).reset_index(drop=True)
        assert (left["timestamp"] == right["timestamp"]).all()
        assert np.allclose(left["bike_count"], right["bike_count"])
        assert np.allclose(left["latitude"], right["latitude"])


def test_dst_days_are_read_as_documented() -> None:
    """The two DST days by hand: the repeated 02:00 is summer then winter time; 02:00 in March does not exist."""
    frame = pd.DataFrame({
        "counter_id": ["c-1"] * 5,
        "timestamp": ["2020-10-25 02:00:00", "2020-10-25 02:00:00", "2021-03-28 02:00:00", "2021-03-28 03:00:00",
                      "2021-03-28T01:00:00+01:00"],
        "bike_count": ["3", "4", "5", "6", "7"], "latitude": ["48.85"] * 5, "longitude": ["2.35"] * 5})
    result = validate(RawTable(frame, "tidy", Path("<dst>"), {c: c for c in frame.columns}, naive_timezone=PARIS_TZ))
    stamps = [t.isoformat() for t in result.accepted["timestamp"]]
    assert stamps == ["2020-10-25T02:00:00+02:00", "2020-10-25T02:00:00+01:00", "2021-03-28T03:00:00+02:00",
                      "2021-03-28T01:00:00+01:00"]
    assert result.rejected["reason"].tolist() == [S.REASON_DST_GAP]
    assert math.isclose(result.accepted["bike_count"].sum(), 3 + 4 + 6 + 7)
