"""The one time-zone rule: ``to_paris(values, naive="utc" | "paris")``."""

from __future__ import annotations

import pandas as pd
import pytest

from velocast.data.schema import to_paris


def _offsets(stamps: pd.Series) -> list[float]:
    return [t.utcoffset().total_seconds() / 3600 for t in stamps]


def test_naive_utc_and_naive_paris_differ_by_the_offset_of_the_day() -> None:
    naive = pd.Series(pd.to_datetime(["2021-01-15 12:00", "2021-07-15 12:00"]))
    utc = to_paris(naive, naive="utc")
    paris = to_paris(naive, naive="paris")
    assert [t.hour for t in utc] == [13, 14]  # 12:00 UTC is 13:00 in winter, 14:00 in summer
    assert [t.hour for t in paris] == [12, 12]
    assert _offsets(utc) == _offsets(paris) == [1, 2]
    assert str(utc.dtype) == str(paris.dtype) == "datetime64[ns, Europe/Paris]"


def test_aware_values_are_converted_whatever_naive_says() -> None:
    aware = pd.Series(pd.to_datetime(["2021-06-01T10:00:00+00:00"], utc=True))
    assert to_paris(aware, naive="utc").iloc[0] == to_paris(aware, naive="paris").iloc[0]
    assert to_paris(aware, naive="paris").iloc[0].hour == 12
    assert to_paris("2021-06-01T10:00:00+02:00", naive="utc").hour == 10


def test_scalars() -> None:
    assert to_paris("2021-01-15", naive="paris") == pd.Timestamp("2021-01-15 00:00", tz="Europe/Paris")
    assert to_paris("2021-01-15", naive="utc") == pd.Timestamp("2021-01-15 01:00", tz="Europe/Paris")
    assert to_paris(pd.Timestamp("2021-07-15 22:30"), naive="utc").day == 16  # past Paris midnight


def test_spring_dst_day() -> None:
    """2021-03-28: 02:00-03:00 Paris time does not exist; UTC hours around it are all valid."""
    utc_hours = pd.Series(pd.date_range("2021-03-28 00:00", periods=3, freq="h"))  # 00:00, 01:00, 02:00 UTC
    assert [t.hour for t in to_paris(utc_hours, naive="utc")] == [1, 3, 4]
    assert _offsets(to_paris(utc_hours, naive="utc")) == [1, 2, 2]
    with pytest.raises(ValueError, match=r"row 1: .*does not exist"):
        to_paris(pd.Series(["2021-03-28 01:00", "2021-03-28 02:00"]), naive="paris")


def test_autumn_dst_day() -> None:
    """2021-10-31: 02:00 Paris time occurs twice; naive UTC is never ambiguous."""
    utc_hours = pd.Series(pd.date_range("2021-10-31 00:00", periods=2, freq="h"))  # 00:00, 01:00 UTC
    assert [t.hour for t in to_paris(utc_hours, naive="utc")] == [2, 2]
    assert _offsets(to_paris(utc_hours, naive="utc")) == [2, 1]
    twice = to_paris(pd.Series(["2021-10-31 02:00", "2021-10-31 02:00"]), naive="paris")
    assert _offsets(twice) == [2, 1]  # the first occurrence is summer time


def test_naive_must_be_named() -> None:
    with pytest.raises(ValueError, match="naive='local': expected one of utc, paris"):
        to_paris("2021-01-01", naive="local")
    with pytest.raises(TypeError):
        to_paris("2021-01-01")  # type: ignore[call-arg]
