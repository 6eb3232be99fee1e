"""Shared fixtures of the backend tests.

Two kinds of data:

- The real sample city (``resources/sample_data/sf``): 579 block groups (id ``GEO_ID``), 2,563 OSM POIs
  (12 outside every block group), a 3-band uint8 Landsat-7 GeoTIFF in EPSG:3857 with nodata 0, and
  13,472 crime incident points. ``sf_city`` and ``sf_views`` are read once per session; treat them as
  read-only.
- A tiny hand-made city for bad inputs: a 2 x 2 grid of 100 m squares in EPSG:32610 (``toy_regions``),
  and the writers ``write_gpkg`` / ``write_tif`` that put layers and rasters into ``tmp_path``.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from backend.config import RunConfig, config_from_dict
from backend.io.city import CityData, read_city
from backend.progress import Progress
from backend.views import Views, build_views

SF_DIR = Path(__file__).resolve().parents[2] / "resources" / "sample_data" / "sf"

#: Lower-left corner of the toy grid (EPSG:32610, central San Francisco).
TOY_X0, TOY_Y0 = 550_000.0, 4_180_000.0

_SF_CONFIG: dict[str, Any] = {
    "output_dir": "out/test_sf",
    "regions": {"path": "sf_block_groups_crime_pop.geojson", "id_field": "GEO_ID"},
    "pois": {"path": "sf_pois_osm.geojson", "category_field": "category", "name_field": "name"},
    "rasters": [{"path": "sf_landsat7_3857_30m.tif"}],
    "labels": [
        {"name": "population", "field": "Population", "target": "density"},
        {"name": "robbery_rate", "field": "Robbery", "target": "rate", "per_field": "Population"},
        {
            "name": "robbery_points",
            "points": "sf_crime_incidents_2012h2.geojson",
            "points_filter_field": "category",
            "points_filter_value": "ROBBERY",
        },
    ],
}


@pytest.fixture(scope="session")
def sf_dir() -> Path:
    """Folder of the bundled San Francisco sample city."""
    return SF_DIR


@pytest.fixture
def sf_config_dict() -> dict[str, Any]:
    """A fresh, editable configuration dict for the sample city (paths relative to ``sf_dir``)."""
    return copy.deepcopy(_SF_CONFIG)


@pytest.fixture(scope="session")
def sf_config(sf_dir: Path) -> RunConfig:
    """The sample city's configuration: regions, POIs, the Landsat raster and three labels."""
    return config_from_dict(copy.deepcopy(_SF_CONFIG), base_dir=sf_dir)


@pytest.fixture(scope="session")
def sf_city(sf_config: RunConfig) -> CityData:
    """The sample city read once per session (do not modify)."""
    return read_city(sf_config)


@pytest.fixture(scope="session")
def sf_views(sf_city: CityData) -> Views:
    """Every view of the sample city, chips (64 x 64) included, built once per session (do not modify)."""
    return build_views(sf_city, needs={"chips"}, chip_size=64, report=[])


@pytest.fixture
def toy_regions() -> gpd.GeoDataFrame:
    """Four 100 m squares in a 2 x 2 grid (EPSG:32610), integer ids 1..4 in field ``rid``.

    Layout (ids)::

        3 4
        1 2
    """
    squares = [
        box(TOY_X0 + dx, TOY_Y0 + dy, TOY_X0 + dx + 100, TOY_Y0 + dy + 100) for dy in (0, 100) for dx in (0, 100)
    ]
    return gpd.GeoDataFrame(
        {"rid": [1, 2, 3, 4], "pop": [10.0, 20.0, 30.0, 40.0], "kind": ["a", "b", "c", "d"]},
        geometry=squares,
        crs="EPSG:32610",
    )


@pytest.fixture
def write_gpkg(tmp_path: Path) -> Callable[..., Path]:
    """``write_gpkg(gdf, name, layer=None) -> path``: write a GeoDataFrame to ``tmp_path/name``."""

    def write(gdf: gpd.GeoDataFrame, name: str, layer: str | None = None) -> Path:
        path = tmp_path / name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "'crs' was not provided" for layers without a CRS
            gdf.to_file(path, layer=layer, engine="pyogrio")
        return path

    return write


@pytest.fixture
def write_tif(tmp_path: Path) -> Callable[..., Path]:
    """``write_tif(name, data, x0, y_top, res, crs="EPSG:32610", nodata=None) -> path``.

    ``data`` is B x H x W; the raster's top-left corner is ``(x0, y_top)`` and pixels are ``res`` wide.
    """
    import rasterio
    from affine import Affine
    from rasterio.errors import NotGeoreferencedWarning

    def write(
        name: str,
        data: np.ndarray,
        x0: float,
        y_top: float,
        res: float,
        crs: str | None = "EPSG:32610",
        nodata: float | None = None,
    ) -> Path:
        path = tmp_path / name
        data = np.asarray(data)
        profile = {
            "driver": "GTiff",
            "width": data.shape[2],
            "height": data.shape[1],
            "count": data.shape[0],
            "dtype": data.dtype.name,
            "transform": Affine.translation(x0, y_top) @ Affine.scale(res, -res),
            "nodata": nodata,
        }
        if crs is not None:
            profile["crs"] = crs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(data)
        return path

    return write


@pytest.fixture
def small_city(tmp_path: Path, write_gpkg: Callable[..., Path]) -> dict[str, Any]:
    """A small real city in ``tmp_path``: 16 squares of 100 m (4 x 4, EPSG:32610, ids 1..16 in ``rid``, numeric
    ``pop`` and text ``kind``) in ``regions.gpkg`` and 48 POIs (``category``, ``name``) in ``pois.gpkg``.

    Returns a fresh configuration dict (paths relative to ``tmp_path``; baseline, one density label, ridge only,
    no figures) that runs in seconds; write it into ``tmp_path`` to use it.
    """
    from shapely.geometry import Point

    squares, rows = [], []
    for i in range(16):
        x, y = TOY_X0 + 100 * (i % 4), TOY_Y0 + 100 * (i // 4)
        squares.append(box(x, y, x + 100, y + 100))
        rows.append({"rid": i + 1, "pop": float(10 + 7 * i), "kind": "abcd"[i % 4]})
    write_gpkg(gpd.GeoDataFrame(rows, geometry=squares, crs="EPSG:32610"), "regions.gpkg")
    points, attrs = [], []
    categories = ["cafe", "bank", "school", "park"]
    for i in range(16):
        x, y = TOY_X0 + 100 * (i % 4), TOY_Y0 + 100 * (i // 4)
        for j in range(3):
            points.append(Point(x + 20 + 30 * j, y + 25 + 25 * j))
            attrs.append({"category": categories[(i + j * (i % 3)) % 4], "name": f"place {i}-{j}"})
    write_gpkg(gpd.GeoDataFrame(attrs, geometry=points, crs="EPSG:32610"), "pois.gpkg")
    return {
        "output_dir": "out",
        "regions": {"path": "regions.gpkg", "id_field": "rid"},
        "pois": {"path": "pois.gpkg", "category_field": "category", "name_field": "name"},
        "labels": [{"name": "pop", "field": "pop", "target": "density", "log1p": True}],
        "methods": [{"name": "baseline", "dim": 4}],
        "clustering": {"k": 3},
        "prediction": {"models": ["ridge"], "folds": 3, "repeats": 1, "spatial": False},
        "figures": False,
    }


class CountingCancel(threading.Event):
    """A cancel event that counts the cancellation checks and turns set after ``after`` of them."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.checks = 0

    def is_set(self) -> bool:
        self.checks += 1
        if self.checks > self.after:
            self.set()
        return super().is_set()


@pytest.fixture
def cancel_after() -> Callable[[int], Progress]:
    """``cancel_after(n)``: a Progress whose cancellation checks pass ``n`` times, then raise Cancelled.

    Tests count the units of work done before the check that raised (no wall-clock assertions).
    """
    return lambda n: Progress(cancel_event=CountingCancel(n))


@dataclass
class PollLog(Progress):
    """A Progress that keeps the message of every poll (each heartbeat and cancel check) in :attr:`polls`."""

    polls: list[str] = field(default_factory=list)

    def poll(self, fraction: float | None = None, message: str = "") -> None:
        self.polls.append(message)
        super().poll(fraction, message)


@pytest.fixture
def poll_log() -> PollLog:
    """A Progress recording its polls (``.polls``): tests count the heartbeat and cancel checks of a loop."""
    return PollLog()


@pytest.fixture
def cancel_at_message() -> Callable[[str, int], tuple[Progress, list[str]]]:
    """``cancel_at_message(text, n)``: a Progress that cancels itself when it has reported ``text`` ``n`` times,
    and the list of every message it reported."""

    def make(text: str, times: int) -> tuple[Progress, list[str]]:
        messages: list[str] = []
        progress = Progress()

        def callback(stage: str, fraction: float, message: str) -> None:
            messages.append(message)
            if messages.count(text) == times:
                progress.cancel()

        progress.callback = callback
        return progress, messages

    return make


@pytest.fixture
def toy_regions_by_id(toy_regions: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """:func:`toy_regions` indexed as a read layer is: text ids ``"1"`` .. ``"4"`` named ``region_id``."""
    out = toy_regions.copy()
    out.index = pd.Index(["1", "2", "3", "4"], dtype="str", name="region_id")
    return out
@pytest.fixture(scope="session")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The quick demo (baseline, 3 folds, 1 repeat, every label, 90 % intervals, primary = "best") run once per
    session: its :class:`backend.pipeline.RunResult`. Treat its folder as read-only."""
    from backend.demo import demo_config
    from backend.pipeline import run_pipeline

    cfg = demo_config(tmp_path_factory.mktemp("quick") / "run", quick=True)
    cfg.primary = "best"
    return run_pipeline(cfg)
