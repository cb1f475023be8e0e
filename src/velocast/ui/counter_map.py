"""The Predict page's map of the counters, drawn without any map tiles (works offline).

No basemap is requested (``map_provider=None``): the background is drawn from the counters' own
coordinates — the area they cover (their convex hull, padded by a few hundred metres), a light grid
of 1 km squares, and the Seine sketched through the riverside counters (sites named after a quay,
a bridge or a riverside road, within the band of latitudes where the Seine crosses Paris) — and
every site is labelled with its street name, so a counter can be found and picked on a machine
without internet.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pydeck as pdk

PICKED = [230, 80, 30, 235]
LABEL_FONT = "Helvetica, Arial, sans-serif"
OTHER = [30, 110, 200, 210]
AREA_PAD_METRES = 600
# the canvas the initial view fits the counters in (the Predict page's map; a little narrower than
# its column, so the whole area shows on a laptop screen)
MAP_WIDTH, MAP_HEIGHT = 560, 400
GRID_METRES = 1000
# riverside site names, and the latitudes where the Seine crosses Paris (the quays of the canals of
# the 19th arrondissement, quai de l'Oise or de la Marne, lie north of it)
SEINE_SIDE_WORDS = ("quai", "pont ", "voie georges pompidou", "cours la reine")
SEINE_LATITUDES = (48.82, 48.868)
_METRES_PER_DEGREE = 111_320.0


def _metres_per_degree_lon(latitude: float) -> float:
    return _METRES_PER_DEGREE * math.cos(math.radians(latitude))


def counter_area(latitude: np.ndarray, longitude: np.ndarray, pad_metres: float = AREA_PAD_METRES) -> list[list[float]]:
    """The outline (``[lon, lat]`` points) of the area the counters cover, padded outwards."""
    lat0 = float(np.mean(latitude))
    scale = np.array([_metres_per_degree_lon(lat0), _METRES_PER_DEGREE])
    points = np.unique(np.column_stack([longitude, latitude]).astype(float), axis=0)
    origin = points.mean(axis=0)
    metres = (points - origin) * scale
    if len(points) >= 3 and np.linalg.matrix_rank(metres - metres[0]) == 2:
        from scipy.spatial import ConvexHull

        outline = metres[ConvexHull(metres).vertices]
        away = outline - outline.mean(axis=0)
        padded = outline + away / np.linalg.norm(away, axis=1, keepdims=True) * pad_metres
    else:  # one place, or places on a line: a circle around them
        centre = metres.mean(axis=0)
        radius = pad_metres + float(np.max(np.linalg.norm(metres - centre, axis=1)))
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        padded = centre + np.column_stack([np.cos(angles), np.sin(angles)]) * radius
    lonlat = padded / scale + origin
    return [[float(lon), float(lat)] for lon, lat in lonlat]


def grid_lines(outline: list[list[float]], step_metres: float = GRID_METRES) -> pd.DataFrame:
    """Lines of a ``step_metres`` grid over the outline's bounding box (``path``: two ``[lon, lat]``)."""
    lons, lats = np.array([p[0] for p in outline]), np.array([p[1] for p in outline])
    lat0 = float(lats.mean())
    d_lat = step_metres / _METRES_PER_DEGREE
    d_lon = step_metres / _metres_per_degree_lon(lat0)
    paths = [[[float(lon), float(lats.min())], [float(lon), float(lats.max())]]
             for lon in np.arange(lons.min(), lons.max() + d_lon / 2, d_lon)]
    paths += [[[float(lons.min()), float(lat)], [float(lons.max()), float(lat)]]
              for lat in np.arange(lats.min(), lats.max() + d_lat / 2, d_lat)]
    return pd.DataFrame({"path": paths})


def short_name(site: str) -> str:
    """A site's street as a map label: ``Face au 40 quai D'Issy`` -> ``quai D’Issy``.

    The straight quote becomes the typographic one (in deck.gl's JSON props a straight quote reads
    as the start of an expression).
    """
    words = str(site).split()
    while words and (words[0].lower() in ("face", "au", "totem") or words[0][:1].isdigit()):
        words = words[1:]
    return (" ".join(words) or str(site)).replace("'", "\u2019")


def site_labels(counters: pd.DataFrame) -> pd.DataFrame:
    """One label per site (both directions of a street share one place): its name and position."""
    name = counters["site_name"] if "site_name" in counters else counters["counter_name"]
    frame = pd.DataFrame({"name": name.astype(str).map(short_name), "latitude": counters["latitude"].astype(float),
                          "longitude": counters["longitude"].astype(float)})
    return frame.groupby("name", as_index=False).agg(latitude=("latitude", "mean"), longitude=("longitude", "mean"))


def seine_path(labels: pd.DataFrame) -> list[list[float]]:
    """The Seine sketched west to east through the riverside sites of ``site_labels`` (empty if < 3)."""
    name = labels["name"].str.lower()
    riverside = labels[name.map(lambda n: any(word in n for word in SEINE_SIDE_WORDS))
                       & labels["latitude"].between(*SEINE_LATITUDES)]
    if len(riverside) < 3:
        return []
    ordered = riverside.sort_values("longitude")
    return [[float(lon), float(lat)] for lon, lat in zip(ordered["longitude"], ordered["latitude"])]


def fit_view(outline: list[list[float]], width: int, height: int) -> pdk.ViewState:
    """The view that shows the whole ``outline`` in a ``width`` x ``height`` pixel canvas (Web Mercator)."""
    lons, lats = np.array([p[0] for p in outline]), np.array([p[1] for p in outline])

    def mercator_y(lat: np.ndarray) -> np.ndarray:
        return np.log(np.tan(np.pi / 4 + np.radians(lat) / 2))

    span_x = (lons.max() - lons.min()) / 360.0  # share of the world's width
    span_y = float(np.ptp(mercator_y(lats))) / (2 * np.pi)
    zoom = min(np.log2(width / 512 / max(span_x, 1e-9)), np.log2(height / 512 / max(span_y, 1e-9)))
    centre_y = (mercator_y(np.array([lats.min()])) + mercator_y(np.array([lats.max()])))[0] / 2
    centre_lat = float(np.degrees(2 * np.arctan(np.exp(centre_y)) - np.pi / 2))
    return pdk.ViewState(latitude=centre_lat, longitude=float((lons.min() + lons.max()) / 2), zoom=float(zoom))


def counter_deck(counters: pd.DataFrame, picked_label: str | None, width: int = MAP_WIDTH,
                 height: int = MAP_HEIGHT) -> pdk.Deck:
    """The deck of the Predict page: area, grid, counters (pickable, the chosen one in orange), site names.

    ``counters``: ``counter_id``, ``label``, ``latitude``, ``longitude``, ``hours`` (and ``site_name``).
    """
    points = counters[["counter_id", "label", "latitude", "longitude", "hours"]].copy()
    points["counter_id"] = points["counter_id"].astype(str)
    points["color"] = [PICKED if label == picked_label else OTHER for label in points["label"]]
    points = points.sort_values("label", key=lambda labels: labels == picked_label, kind="stable")  # picked on top
    outline = counter_area(points["latitude"].to_numpy(float), points["longitude"].to_numpy(float))
    labels = site_labels(counters)
    seine = seine_path(labels)
    layers = [
        pdk.Layer("PolygonLayer", id="area", data=[{"polygon": outline}], get_polygon="polygon",
                  get_fill_color=[238, 241, 245, 255], get_line_color=[150, 160, 175, 255], line_width_min_pixels=1,
                  pickable=False),
        pdk.Layer("PathLayer", id="grid", data=grid_lines(outline), get_path="path", get_color=[210, 215, 222, 255],
                  width_min_pixels=1, pickable=False),
        pdk.Layer("PathLayer", id="seine", data=[{"path": seine}] if seine else [], get_path="path",
                  get_color=[120, 170, 225, 200], width_min_pixels=5, joint_rounded=True, cap_rounded=True,
                  pickable=False),
        pdk.Layer("TextLayer", id="seine-name",
                  data=[{"text": "Seine", "position": seine[1]}] if seine else [],
                  get_position="position", get_text="text", get_size=15, get_color=[70, 120, 190, 255],
                  get_pixel_offset=[0, 20], font_family=pdk.types.String(LABEL_FONT),
                  font_weight=pdk.types.String("bold"), pickable=False),
        pdk.Layer("ScatterplotLayer", id="counters", data=points, get_position=["longitude", "latitude"],
                  get_fill_color="color", get_radius=80, radius_min_pixels=6, radius_max_pixels=14,
                  pickable=True, auto_highlight=True),
        pdk.Layer("TextLayer", id="sites", data=labels.to_dict("records"), get_position=["longitude", "latitude"],
                  get_text="name", get_size=12, get_color=[40, 45, 60, 255], get_pixel_offset=[0, -14],
                  font_family=pdk.types.String(LABEL_FONT),
                  character_set=pdk.types.String("".join(sorted(set("".join(labels["name"]))))), pickable=False),
    ]
    return pdk.Deck(
        map_provider=None,  # no tiles from the internet: the layers above are the whole map
        initial_view_state=fit_view(outline, width, height),
        layers=layers,
        tooltip={"text": "{label}\n{hours} hours stored"},
    )


__all__ = ["counter_area", "counter_deck", "fit_view", "grid_lines", "seine_path", "short_name", "site_labels"]
