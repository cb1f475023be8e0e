"""Conformal intervals of ``ConformalRegressor``: the split-conformal guarantee on exchangeable data,
conditioning, any coverage, never negative, recalibration after a shift, carried onto another model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.tree import DecisionTreeRegressor

from velocast.models import build_pipeline
from velocast.models.intervals import (
    ConformalRegressor,
    LevelBias,
    OnlineRule,
    RecentErrors,
    conformal_bounds,
    day_number,
)
from velocast.models.weather_fallback import WeatherFallback

N_COUNTERS = 20


class World:
    """Counters with their own level and noise, a daily profile, multiplicative errors (like real counts)."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.level = np.exp(rng.normal(3.0, 1.0, N_COUNTERS))
        self.sigma = rng.uniform(0.15, 0.6, N_COUNTERS)

    def rows(self, rng: np.random.Generator, days: int, noise: float = 1.0,
             shift: float = 1.0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        k = np.repeat(np.arange(N_COUNTERS), 24 * days)
        h = np.tile(np.arange(24), N_COUNTERS * days)
        d = np.tile(np.repeat(np.arange(days), 24), N_COUNTERS)
        mean = self.level[k] * (1 + 3 * np.sin(h / 24 * 2 * np.pi) ** 2) * shift
        y = np.round(mean * np.exp(rng.normal(0, self.sigma[k] * noise)))
        return pd.DataFrame({"counter_code": k.astype(float), "hour": h.astype(float)}), y, d


@pytest.fixture(scope="module")
def world() -> tuple[World, DecisionTreeRegressor]:
    world = World()
    X, y, _ = world.rows(np.random.default_rng(1), 60)
    return world, DecisionTreeRegressor(max_depth=10, random_state=0).fit(X, y)


def _coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    return float(np.mean((y >= lower) & (y <= upper)))


def test_conformal_bounds_use_the_finite_sample_ranks() -> None:
    scores = np.arange(1.0, 20.0)  # n = 19: (n+1) * 0.1 = 2 -> 2nd smallest, (n+1) * 0.9 = 18 -> 18th
    assert conformal_bounds(scores, 0.8) == (2.0, 18.0)
    assert conformal_bounds(scores, 0.99) == (1.0, 19.0)  # too few scores for the rank: the extremes
    with pytest.raises(ValueError, match="no calibration scores"):
        conformal_bounds(np.array([]), 0.8)


def test_guarantee_on_exchangeable_data_over_many_draws(world: tuple[World, DecisionTreeRegressor]) -> None:
    """Calibration days and forecast days drawn alike: coverage is nominal on average, in every draw
    close to it, and holds per count level and per counter (the groups and the counter normalisation)."""
    truth, model = world
    covered, per_counter = [], []
    for draw in range(30):
        rng = np.random.default_rng(100 + draw)
        Xc, yc, dc = truth.rows(rng, 14)
        Xt, yt, _ = truth.rows(rng, 7)
        calibrated = ConformalRegressor.around(model).calibrate(Xc, yc, dc)
        _, lower, upper = calibrated.predict_interval(Xt, 0.8)
        covered.append(_coverage(yt, lower, upper))
        inside = (yt >= lower) & (yt <= upper)
        per_counter.append(pd.Series(inside).groupby(Xt["counter_code"].to_numpy()).mean().to_numpy())
    assert 0.79 <= np.mean(covered) <= 0.83
    assert 0.74 <= min(covered) and max(covered) <= 0.88
    # per counter it is not a guarantee (counters are normalised, not groups of their own) but close; the
    # counters of a few bikes an hour cover more (many counts tie on 0, 1, 2)
    by_counter = np.mean(per_counter, axis=0)
    assert by_counter.min() > 0.72 and by_counter.max() < 0.95 and np.mean((by_counter > 0.72) & (by_counter < 0.88)) > 0.8


def test_any_coverage_widens_monotonically_and_is_never_negative(world: tuple[World, DecisionTreeRegressor]) -> None:
    truth, model = world
    rng = np.random.default_rng(5)
    Xc, yc, dc = truth.rows(rng, 14)
    Xt, yt, _ = truth.rows(rng, 14)
    calibrated = ConformalRegressor.around(model).calibrate(Xc, yc, dc)
    widths = []
    for level in (0.5, 0.8, 0.95, 0.99):
        prediction, lower, upper = calibrated.predict_interval(Xt, level)
        assert (lower >= 0).all() and (lower <= upper).all()
        assert abs(_coverage(yt, lower, upper) - level) < 0.03
        widths.append(np.mean(upper - lower))
    assert widths == sorted(widths)
    with pytest.raises(ValueError, match="between 0.5 and 0.99"):
        calibrated.predict_interval(Xt, 0.999)
    # an uncalibrated model says so with NaN bounds; its point predictions are the regressor's
    prediction, lower, upper = ConformalRegressor.around(model).predict_interval(Xt)
    assert np.isnan(lower).all() and np.isnan(upper).all() and np.allclose(prediction, model.predict(Xt))


def test_recalibration_restores_coverage_after_a_shift(world: tuple[World, DecisionTreeRegressor]) -> None:
    """Counts grow by 60% and get noisier: the old intervals miss; recalibrating on the new days fixes them
    without touching the point model."""
    truth, model = world
    rng = np.random.default_rng(9)
    Xc, yc, dc = truth.rows(rng, 14)
    old = ConformalRegressor.around(model).calibrate(Xc, yc, dc)
    Xs, ys, ds = truth.rows(rng, 14, noise=1.5, shift=1.6)  # the newest labelled days, after the shift
    Xf, yf, _ = truth.rows(rng, 7, noise=1.5, shift=1.6)  # the days forecast next
    assert _coverage(yf, *old.predict_interval(Xf)[1:]) < 0.6
    new = old.calibrate(Xs, ys, ds)
    assert 0.76 <= _coverage(yf, *new.predict_interval(Xf)[1:]) <= 0.84
    assert np.allclose(new.predict(Xf), old.predict(Xf)) and new.estimator_ is old.estimator_


def test_a_calibration_carried_onto_another_model_follows_the_counters_by_id(
        world: tuple[World, DecisionTreeRegressor]) -> None:
    truth, model = world
    rng = np.random.default_rng(3)
    Xc, yc, dc = truth.rows(rng, 14)
    calibrated = ConformalRegressor.around(model).calibrate(Xc, yc, dc)
    # the other model's counter k is this one's counter N-1-k; its counter N (new) was never calibrated
    mapping = np.concatenate([np.arange(N_COUNTERS)[::-1], [-1]])
    carried = calibrated.onto(model, mapping)
    assert np.allclose(carried.counter_spread_[:, 0], calibrated.counter_spread_[:, N_COUNTERS - 1])
    assert carried.counter_spread_[0, N_COUNTERS] == 1.0 and carried.counter_shift_[0, N_COUNTERS] == 0.0
    assert carried.scores_ is calibrated.scores_


def test_regression_pipelines_carry_intervals_and_weather_variants_are_calibrated_apart() -> None:
    for model_type in ("lgbm", "baseline"):
        assert isinstance(build_pipeline(model_type).named_steps["model"], ConformalRegressor)
    assert not isinstance(build_pipeline("rf_class").named_steps["model"], ConformalRegressor)
    model = build_pipeline("lgbm").named_steps["model"]
    model.estimator_ = WeatherFallback(model.estimator)  # only its type matters for the variant of a row
    rows = pd.DataFrame({"temperature_c": [12.0, np.nan], "rain_mm": [0.0, 0.0]})
    assert model.n_variants == 2 and list(model.variant_of(rows)) == [1, 0]


def test_forecasts_follow_the_errors_of_the_days_before(world: tuple[World, DecisionTreeRegressor]) -> None:
    """After calibration, four counters get twice as noisy and 40% busier. Day by day, intervals adapted
    on the errors of the 14 days before each day bring their coverage back, the other counters keep
    theirs, and the level bias of the 3 days before corrects the busier counters' predictions. Nothing
    of a day depends on the counts of that day or later; counters without recent errors keep their
    calibration and are not corrected."""
    truth, model = world
    rng = np.random.default_rng(21)
    Xc, yc, dc = truth.rows(rng, 21)  # calibrated on 2021-01-01 .. 01-21, forecast from 01-22 on
    dates = (pd.Timestamp("2021-01-01") + pd.to_timedelta(dc, "D")).strftime("%Y-%m-%d").to_numpy()
    calibrated = ConformalRegressor.around(model).calibrate(Xc, yc, dates)
    assert calibrated.unseen_from == calibrated.calibrated_through + 1 == day_number("2021-01-22")
    changed = np.arange(4)
    noisy = World()
    noisy.sigma, noisy.level = truth.sigma.copy(), truth.level.copy()
    noisy.sigma[changed] *= 2.0
    noisy.level[changed] *= 1.4
    X, y, d = noisy.rows(rng, 42)
    first_day = day_number("2021-01-22")
    d = d + first_day  # Paris day numbers
    prediction = calibrated.predict(X)
    variant, counter = calibrated.variant_of(X), calibrated.counter_of(X)
    hour = X["hour"].to_numpy().astype(np.int64)
    recent = RecentErrors.of(prediction, y, variant, counter, d, hour)
    static = calibrated.bounds(prediction, variant, counter)
    rule = OnlineRule(interval_days=14, bias_days=3)
    point, lower, upper = calibrated.day_by_day(prediction, variant, counter, d, hour, recent, rule)
    later = d - first_day >= 14  # days with 14 days of errors before them
    hit = np.isin(X["counter_code"].to_numpy(), changed) & later
    before, after = _coverage(y[hit], static[0][hit], static[1][hit]), _coverage(y[hit], lower[hit], upper[hit])
    # most of the way back (the counters' recent statistics are shrunk towards the calibration's)
    assert before < 0.55 and after >= 0.70 and after - before > 0.15, (before, after)
    calm = ~np.isin(X["counter_code"].to_numpy(), changed) & later
    assert 0.74 <= _coverage(y[calm], lower[calm], upper[calm]) <= 0.86
    # the busier counters' predictions rise towards their new level; the others barely move
    assert np.median(point[hit] / np.maximum(prediction[hit], 1e-9)) > 1.15
    assert abs(np.median(point[calm] / np.maximum(prediction[calm], 1e-9)) - 1) < 0.08
    bias_before = np.median(np.log1p(y[hit]) - np.log1p(prediction[hit]))
    bias_after = np.median(np.log1p(y[hit]) - np.log1p(point[hit]))
    assert bias_before > 0.25 and abs(bias_after) < bias_before / 2, (bias_before, bias_after)
    assert ((point >= lower) & (point <= upper)).all()
    first = d == first_day  # no day before it: the calibration's bounds, the model's prediction
    np.testing.assert_array_equal(lower[first], static[0][first])
    np.testing.assert_array_equal(point[first], prediction[first])
    # counts of day 20 and later changed (even missing): nothing of days up to 20 changes
    y2 = y.copy()
    d20 = first_day + 20
    y2[d >= d20] = np.where(rng.random(int((d >= d20).sum())) < 0.5, np.nan, y2[d >= d20] * 3)
    again = calibrated.day_by_day(prediction, variant, counter, d, hour,
                                  RecentErrors.of(prediction, y2, variant, counter, d, hour), rule)
    upto = d <= d20
    for new, old in zip(again, (point, lower, upper)):
        np.testing.assert_array_equal(new[upto], old[upto])
    assert not np.array_equal(again[2][d > d20], upper[d > d20])
    assert not np.array_equal(again[0][d > d20], point[d > d20])
    # intervals only: the prediction is the model's; no rule: as calibrated; a cache gives the same
    only = calibrated.day_by_day(prediction, variant, counter, d, hour, recent, OnlineRule(interval_days=14))
    np.testing.assert_array_equal(only[0], prediction)
    # ... whose bounds are the calibration's adapted on the model's own errors, around the model's prediction;
    # with the bias correction the bounds are around the corrected forecast, adapted on the errors of the
    # forecasts served: in the days after the change, before the intervals' 14 days have followed it, they
    # miss the busier counts less often
    soon = np.isin(X["counter_code"].to_numpy(), changed) & (d - first_day >= 3) & (d - first_day < 10)
    around_model, around_served = _coverage(y[soon], only[1][soon], only[2][soon]), _coverage(y[soon], lower[soon],
                                                                                            upper[soon])
    assert around_served - around_model > 0.02, (around_model, around_served)
    assert np.mean(y[soon] > upper[soon]) < np.mean(y[soon] > only[2][soon]) - 0.05
    none = calibrated.day_by_day(prediction, variant, counter, d, hour, recent, OnlineRule())
    np.testing.assert_array_equal(none[0], prediction)
    np.testing.assert_array_equal(none[2], static[1])
    cache: dict = {}
    cached = calibrated.day_by_day(prediction, variant, counter, d, hour, recent, rule, cache=cache)
    np.testing.assert_array_equal(cached[0], point)
    np.testing.assert_array_equal(cached[2], upper)
    assert set(cache) == set(range(first_day, first_day + 42))
    # an adapted copy shares the calibration and the point model; a counter with too few errors keeps its prior
    one = calibrated.adapted(recent.between(first_day + 10, d20))
    assert one.scores_ is calibrated.scores_ and one.estimator_ is calibrated.estimator_
    assert not np.array_equal(one.counter_spread_, calibrated.counter_spread_)
    few = RecentErrors.of(prediction[:5], y[:5], variant[:5], counter[:5], d[:5], hour[:5])
    np.testing.assert_array_equal(calibrated.adapted(few).counter_spread_, calibrated.counter_spread_)
    assert LevelBias.of(few).by_counter == {}  # fewer than MIN_ADAPT_ROWS


def test_level_bias_is_the_shrunk_median_of_each_counter_variant_and_block_of_hours():
    """``LevelBias.of`` (sorted arrays) equals the definition written as a pandas group-by, on ragged
    groups: odd and even sizes, groups below ``MIN_ADAPT_ROWS``, unknown counters (-1) left out; a
    row's shift is its block's, else its variant's, else its counter's, else none."""
    from velocast.models.intervals import BIAS_PRIOR_DAYS, HOUR_BLOCKS, MIN_ADAPT_ROWS

    rng = np.random.default_rng(7)
    n = 6000
    counter = rng.integers(-1, 40, n)
    variant = rng.integers(0, 2, n)
    day = rng.integers(100, 104, n)
    hour = rng.integers(0, 24, n)
    prediction = rng.gamma(2.0, 30.0, n)
    count = np.round(prediction * np.exp(rng.normal(0.1 * (counter % 5) + 0.05 * (hour // 6), 0.4, n)))
    bias = LevelBias.of(RecentErrors.of(prediction, count, variant, counter, day, hour))

    block = np.searchsorted(HOUR_BLOCKS, hour, side="right")  # 0-5 -> 0, 6-9 -> 1, ... 20-23 -> 4
    assert block[hour == 5].max(initial=0) == 0 and set(block[hour == 6]) == {1} and set(block[hour == 23]) == {4}
    frame = pd.DataFrame({"v": variant, "c": counter, "b": block, "d": day,
                          "r": np.log1p(count) - np.log1p(prediction)})
    frame = frame[frame["c"] >= 0]

    def expected(groups):
        stats = groups.agg(n=("r", "size"), days=("d", "nunique"), median=("r", "median"))
        stats = stats[stats["n"] >= MIN_ADAPT_ROWS]
        return (stats["median"] * stats["days"] / (stats["days"] + BIAS_PRIOR_DAYS)).to_dict()

    by_block = expected(frame.groupby(["v", "c", "b"]))
    by_pair, by_counter = expected(frame.groupby(["v", "c"])), expected(frame.groupby("c"))
    assert len(by_counter) == 40 and len(by_pair) == 80 and 0 < len(by_block) < 400  # some blocks fall below
    assert bias.by_block.keys() == by_block.keys()
    assert bias.by_pair.keys() == by_pair.keys() and bias.by_counter.keys() == by_counter.keys()
    np.testing.assert_allclose([bias.by_block[k] for k in by_block], list(by_block.values()), rtol=1e-12)
    np.testing.assert_allclose([bias.by_pair[k] for k in by_pair], list(by_pair.values()), rtol=1e-12)
    np.testing.assert_allclose([bias.by_counter[k] for k in by_counter], list(by_counter.values()), rtol=1e-12)
    # the shift of new rows, including a counter never seen (40) and an unknown one (-1)
    few = LevelBias(by_block, {k: v for k, v in by_pair.items() if k[1] % 3}, {k: v for k, v in by_counter.items()
                                                                               if k % 4})
    v, c, h = rng.integers(0, 2, 3000), rng.integers(-1, 41, 3000), rng.integers(0, 24, 3000)
    b = np.searchsorted(HOUR_BLOCKS, h, side="right")
    want = [few.by_block.get((vi, ci, bi), few.by_pair.get((vi, ci), few.by_counter.get(ci, 0.0)))
            for vi, ci, bi in zip(v.tolist(), c.tolist(), b.tolist())]
    np.testing.assert_array_equal(few.shift(v, c, h), want)
    assert (few.shift(v, c, h)[(c < 0) | (c == 40)] == 0).all()
    assert len(set(want)) > 300  # blocks, pairs and counters all used
    assert LevelBias.of(RecentErrors.empty()).by_counter == {}
