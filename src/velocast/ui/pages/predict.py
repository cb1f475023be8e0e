"""Predict: one counter and one day — the chosen hour and the 24 hours, with the prediction interval drawn
as a band around the day's curve and the stored counts overlaid."""

from __future__ import annotations

from datetime import date, timedelta

import altair as alt
import pandas as pd
import streamlit as st

from velocast.config import PARIS_TZ
from velocast.ui import common
from velocast.ui.client import ClientError, NoModelError, day_rows
from velocast.ui.counter_map import MAP_HEIGHT, counter_deck

COVERAGES = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]

st.title("Predict")
st.caption("Pick a counter on the map or in the list, a day and an hour (Paris time): the champion forecasts "
           "that hour and the whole day.")

client = common.client()
counters = common.counters(common.client_key())
if counters.empty:
    common.no_data_message()
    st.stop()

counters = counters.sort_values("counter_name").reset_index(drop=True)
duplicated = counters["counter_name"].duplicated(keep=False)
counters["label"] = counters["counter_name"].astype(str).where(
    ~duplicated, counters["counter_name"].astype(str) + " (" + counters["counter_id"].astype(str) + ")")
label_of = dict(zip(counters["counter_id"].astype(str), counters["label"]))

# ------------------------------------------------------------------ the map (click a counter to pick it)
current = st.session_state.get("counter", counters["label"].iloc[0])
deck = counter_deck(counters, current)
event = st.pydeck_chart(deck, on_select="rerun", selection_mode="single-object", key="counter_map",
                        height=MAP_HEIGHT)
st.caption("No map tiles (works offline): the shaded area is where the counters are, the grid squares are 1 km, "
           "the blue line sketches the Seine through the riverside counters. Click a dot to pick its counter.")
picked = (event.selection.objects or {}).get("counters") or []
if picked:
    picked_id = str(picked[0].get("counter_id"))
    if st.session_state.get("_map_pick") != picked_id and picked_id in label_of:
        st.session_state["_map_pick"] = picked_id
        st.session_state["counter"] = label_of[picked_id]

# ------------------------------------------------------------------ the question
latest = client.latest_timestamp()
if latest is not None:
    local = latest.tz_convert(PARIS_TZ)
    default_day = local.date() if local.hour < 23 else local.date() + timedelta(days=1)
else:
    default_day = date.today()

left, middle, right = st.columns([3, 2, 2])
with left:
    choice = st.selectbox("Counter", counters["label"].tolist(), key="counter")
with middle:
    day = st.date_input("Day (Paris)", value=default_day, key="day")
    hour = st.selectbox("Hour (Paris time)", list(range(24)), index=8, format_func=lambda h: f"{h:02d}:00",
                        key="hour")
with right:
    model_type = common.model_type_picker(key="model_type")
    coverage = st.select_slider("Interval", options=COVERAGES, value=0.8, format_func=lambda c: f"{c:.0%}",
                                key="coverage", help="The band holds this share of the counts: a calibrated "
                                "(conformal) prediction interval.")
    own_weather = st.toggle("Set the weather myself", key="own_weather",
                            help="Off: the stored weather forecast of that day, issued by the evening before "
                                 "(as the API and `velocast predict` serve it); without one, no weather.")
temperature = rain = None
if own_weather:
    w1, w2 = st.columns(2)
    temperature = w1.number_input("Temperature (°C)", -20.0, 45.0, 15.0, step=1.0, key="temperature")
    rain = w2.number_input("Rain (mm in the hour)", 0.0, 50.0, 0.0, step=0.5, key="rain")
    st.caption("The weather you set applies to every hour of the day.")

if st.button("Predict", type="primary", key="predict"):
    counter = counters[counters["label"] == choice].iloc[0]
    rows = day_rows(counter, day, temperature, rain)
    try:
        with st.spinner("Predicting..."):
            result = client.predict(rows, model_type, coverage)
            actual = client.counts(str(counter["counter_id"]), day)
    except NoModelError as exc:
        st.warning(str(exc))
        st.stop()
    except ClientError as exc:
        st.error(str(exc))
        st.stop()
    st.session_state["prediction"] = {"counter": choice, "day": day, "hour": hour, "result": result,
                                      "actual": actual, "weather": (temperature, rain)}

# ------------------------------------------------------------------ the answer
shown = st.session_state.get("prediction")
if shown is None:
    st.stop()

result = shown["result"]
frame = result.frame.copy()
frame["hour"] = [f"{t.tz_convert(PARIS_TZ):%H}:00" for t in frame["timestamp"]]
actual = shown["actual"]
if not actual.empty:
    by_hour = actual.set_index(actual["timestamp"].dt.tz_convert(PARIS_TZ).dt.strftime("%H:00"))["bike_count"]
    by_hour = by_hour[~by_hour.index.duplicated()]
    frame["actual"] = frame["hour"].map(by_hour)
value_column = "probability" if "probability" in frame else "prediction"
frame = frame.rename(columns={value_column: "predicted"})
paris_hours = frame["timestamp"].map(lambda t: t.tz_convert(PARIS_TZ).hour)
asked = frame[paris_hours == shown["hour"]]
if asked.empty:  # the hour the clocks skip when summer time starts (02:00 on the last Sunday of March)
    later = frame[paris_hours > shown["hour"]]
    asked = later if not later.empty else frame
    st.info(f"{shown['hour']:02d}:00 does not exist on that day in Paris (the clocks skip it when summer time "
            f"starts): {paris_hours[asked.index[0]]:02d}:00 is shown.")
at_hour = asked.iloc[0]
hour_shown = int(paris_hours[asked.index[0]])

st.subheader(f"{shown['counter']} — {pd.Timestamp(shown['day']):%A %d %B %Y} (Paris)")
m1, m2, m3 = st.columns(3)
if value_column == "probability":
    m1.metric(f"Probability of a busy hour at {hour_shown:02d}:00 (Paris)", f"{at_hour['predicted']:.0%}")
else:
    m1.metric(f"Predicted bikes at {hour_shown:02d}:00 (Paris)", f"{at_hour['predicted']:.0f}")
    if result.coverage is not None:
        m1.caption(f"{result.coverage:.0%} interval: **{at_hour['lower']:.0f} – {at_hour['upper']:.0f}** bikes")
    m2.metric("Predicted bikes over the day", f"{frame['predicted'].sum():,.0f}")
if "actual" in frame and pd.notna(at_hour.get("actual")):
    m3.metric(f"Counted at {hour_shown:02d}:00 (Paris)", f"{at_hour['actual']:.0f}")
model = result.model
st.caption(f"Model: **{model.label}** — `{model.uri}`" + (f", run `{model.run_id}`" if model.run_id else "")
           + (f", horizon {model.horizon}" if model.horizon else ""))
if shown["weather"][0] is not None:
    st.caption(f"Weather set: {shown['weather'][0]:.1f} °C, {shown['weather'][1]:.1f} mm of rain per hour.")
for warning in result.warnings:
    st.warning(warning)

series = ["predicted"] + (["actual"] if "actual" in frame and frame["actual"].notna().any() else [])
banded = result.coverage is not None and "lower" in frame and frame["lower"].notna().all()
y_title = "probability of a busy hour" if value_column == "probability" else "bikes per hour"
x = alt.X("hour:O", title="hour (Europe/Paris)", axis=alt.Axis(labelAngle=0))
lines = alt.Chart(frame).transform_fold(series, as_=["series", "value"]).mark_line(point=True).encode(
    x=x, y=alt.Y("value:Q", title=y_title),
    color=alt.Color("series:N", scale=alt.Scale(domain=series, range=["#e4572e", "#29335c"][:len(series)]),
                    legend=alt.Legend(title=None, orient="top")))
layers = [lines]
if banded:
    band_label = f"{result.coverage:.0%} interval"
    band = alt.Chart(frame.assign(interval=band_label)).mark_area(opacity=0.25).encode(
        x=x, y="lower:Q", y2="upper:Q",
        fill=alt.Fill("interval:N", scale=alt.Scale(domain=[band_label], range=["#e4572e"]),
                      legend=alt.Legend(title=None, orient="top")),
        tooltip=["hour", alt.Tooltip("lower:Q", format=".0f"), alt.Tooltip("predicted:Q", format=".0f"),
                 alt.Tooltip("upper:Q", format=".0f")])
    layers = [band, lines]
st.altair_chart(alt.layer(*layers).resolve_scale(color="independent"), width="stretch")
if banded:
    st.caption(f"The band is the {result.coverage:.0%} prediction interval: calibrated so that {result.coverage:.0%} "
               "of the counts fall inside it (conformal prediction on recent days the model never trained on).")
if len(series) == 1:
    st.caption("No stored counts for this counter and day: only the prediction is drawn.")
with st.expander("Hourly values (Paris time)"):
    st.dataframe(frame[["hour", *series, *(["lower", "upper"] if banded else [])]].rename(
        columns={"hour": "hour (Paris)"}), hide_index=True)
