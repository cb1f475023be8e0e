"""The Predict page's offline map, drawn from the counters' own coordinates."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.path import Path as Polygon

from tests.conftest import REAL_COUNTS
from velocast.ui.counter_map import counter_area, counter_deck, fit_view, seine_path, short_name, site_labels


def _real_counters() -> pd.DataFrame:
    frame = pd.read_parquet(REAL_COUNTS, columns=["counter_id", "counter_name", "site_name", "latitude", "longitude"])
    counters = frame.drop_duplicates("counter_id").reset_index(drop=True)
    return counters.assign(label=counters["counter_name"], hours=1)


def test_the_area_holds_every_counter_and_the_view_shows_it_whole() -> None:
    counters = _real_counters()
    lat, lon = counters["latitude"].to_numpy(float), counters["longitude"].to_numpy(float)
    outline = counter_area(lat, lon)
    assert Polygon(outline).contains_points(np.column_stack([lon, lat])).all()
    view = fit_view(outline, 560, 400)
    scale = 512 * 2 ** view.zoom  # Web Mercator pixels of the whole world at that zoom
    assert (max(p[0] for p in outline) - min(p[0] for p in outline)) / 360 * scale <= 560 + 1e-6
    assert 11 < view.zoom < 13 and abs(view.latitude - 48.86) < 0.02 and abs(view.longitude - 2.34) < 0.03
    assert len(counter_area(np.array([48.85]), np.array([2.35]))) == 24  # one place: a circle around it


def test_the_seine_runs_west_to_east_through_riverside_sites_only() -> None:
    labels = site_labels(_real_counters())
    path = seine_path(labels)
    names = {short_name(n) for n in ("Face au 40 quai D'Issy", "Quai d'Orsay", "Pont de Bercy", "Face au 70 quai de Bercy")}
    on_path = {name for name, lon, lat in zip(labels["name"], labels["longitude"], labels["latitude"])
               if [lon, lat] in path}
    assert names <= on_path
    assert "quai de l’Oise" not in on_path and "quai de la marne" not in on_path  # the canal, north of the Seine
    assert [p[0] for p in path] == sorted(p[0] for p in path)
    assert seine_path(labels[~labels["name"].str.contains("quai|Pont", case=False)]) == []


def test_labels_and_the_deck_fetch_nothing() -> None:
    assert short_name("Face au 40 quai D'Issy") == "quai D’Issy"
    assert short_name("Totem 73 boulevard de Sébastopol") == "boulevard de Sébastopol"
    counters = _real_counters()
    deck = counter_deck(counters, counters["label"].iloc[3])
    assert deck.map_provider is None  # no basemap: no tile is ever requested
    layers = {layer.id: layer for layer in deck.layers}
    assert set(layers) == {"area", "grid", "seine", "seine-name", "counters", "sites"}
    points = layers["counters"].data  # records, the picked counter last (drawn on top)
    assert points[-1]["label"] == counters["label"].iloc[3] and points[-1]["color"] == [230, 80, 30, 235]
    assert "'" not in "".join(site["name"] for site in layers["sites"].data)
