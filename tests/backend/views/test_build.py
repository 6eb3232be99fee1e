"""build_views: which views exist for which sources, chips on demand, vocabulary alignment, progress."""

from __future__ import annotations

import dataclasses
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from backend.errors import Cancelled
from backend.io.city import CityData
from backend.progress import Progress
from backend.views import Views, build_views

X0, Y0 = 550_000.0, 4_180_000.0
NAME = "sf_landsat7_3857_30m"


def test_sf_views(sf_city: CityData, sf_views: Views) -> None:
    assert sf_views.available() == {"poi_counts", "image_stats", "poi_texts", "poi_points", "adjacency", "chips"}
    assert sf_views.region_ids.equals(sf_city.regions.index) and len(sf_views) == 579
    for table in sf_views.tables.values():
        assert table.index.equals(sf_views.region_ids)
    assert sf_views.areas_km2 is not None and sf_views.areas_km2.sum() == pytest.approx(123.35, abs=0.05)
    assert sf_views.centroids is not None and sf_views.centroids.shape == (579, 2)
    assert list(sf_views.chips) == [NAME] and list(sf_views.chip_masks) == [NAME]


def test_chips_only_when_needed_and_missing_sources_mean_fewer_views(sf_city: CityData) -> None:
    views = build_views(sf_city, report=[])
    assert not views.chips and views.samples is None and "image_stats" in views.tables
    bare = build_views(dataclasses.replace(sf_city, pois=None, rasters=[]), needs={"chips"}, report=[])
    assert bare.available() == {"adjacency"} and bare.areas_km2 is not None


def test_vocabulary_aligns_columns(sf_city: CityData, sf_views: Views) -> None:
    stats_cols = list(sf_views.tables["image_stats"].columns[:3]) + ["other_b1_mean"]
    report: list[str] = []
    views = build_views(
        sf_city, vocabulary={"poi_counts": ["cafe", "museum"], "image_stats": stats_cols}, report=report
    )
    assert list(views.tables["poi_counts"].columns) == ["cafe", "museum"]
    assert list(views.tables["image_stats"].columns) == stats_cols
    assert (views.tables["image_stats"]["other_b1_mean"] == 0).all()
    assert report == ["image_stats: 1 columns of the saved model are absent here and set to 0 (other_b1_mean)."]


def test_mobility_and_landuse_views(toy_regions: gpd.GeoDataFrame) -> None:
    regions = toy_regions.copy()
    regions.index = pd.Index(["1", "2", "3", "4"], dtype="str", name="region_id")
    od = pd.DataFrame({"origin": ["1", "2"], "destination": ["2", "1"], "count": [4.0, 6.0]})
    landuse = gpd.GeoDataFrame({"landuse_class": ["park"]}, geometry=[box(X0, Y0, X0 + 200, Y0 + 100)], crs=regions.crs)
    city = CityData(crs=regions.crs, regions=regions, od=od, landuse=landuse)
    views = build_views(city, vocabulary={"landuse": ["park", "water", "uncovered"]})
    assert views.available() == {"mobility", "landuse", "adjacency"}
    assert views.mobility is not None and views.mobility.sum() == 10.0 and views.mobility[1, 0] == 6.0
    assert list(views.tables["landuse"].columns) == ["park", "water", "uncovered"]
    np.testing.assert_allclose(views.tables["landuse"]["park"], [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(views.areas_km2, 0.01)


def test_progress_and_cancel(sf_city: CityData) -> None:
    seen: list[float] = []
    build_views(sf_city, progress=Progress(callback=lambda s, f, m: seen.append(f)), report=[])
    assert seen[-1] == 1.0 and seen == sorted(seen)
    progress = Progress()
    progress.cancel()
    with pytest.raises(Cancelled):
        build_views(sf_city, progress=progress, report=[])


def test_every_input_kind_is_a_config_source_a_reader_and_a_view_builder() -> None:
    from backend.config import INPUT_KINDS, RunConfig
    from backend.io.city import INPUT_READERS
    from backend.models import EMBEDDERS
    from backend.models._base import INPUT_FIELDS
    from backend.views.build import VIEW_BUILDERS, VIEW_SOURCES

    kinds = set(VIEW_BUILDERS)
    assert kinds == set(INPUT_KINDS) == {"regions", *INPUT_READERS} == set(INPUT_FIELDS)
    config_fields = {f.name for f in dataclasses.fields(RunConfig)}
    city_fields = {f.name for f in dataclasses.fields(CityData)}
    assert kinds <= config_fields and kinds <= city_fields
    views = [view for builder in VIEW_BUILDERS.values() for view in builder.views]
    assert len(views) == len(set(views)) == len(VIEW_SOURCES)  # each view from one input kind
    for cls in EMBEDDERS.values():
        assert set(cls.uses_views) <= set(VIEW_SOURCES), cls.name


def test_views_come_from_the_builders_of_the_inputs_the_city_has(toy_regions: gpd.GeoDataFrame,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.views import build

    calls: list[str] = []

    def traced(kind: str, builder: build.ViewBuilder) -> build.ViewBuilder:
        def run(city: CityData, views: Views, ctx: build.BuildContext) -> None:
            calls.append(kind)
            builder.build(city, views, ctx)

        return dataclasses.replace(builder, build=run)

    monkeypatch.setattr(build, "VIEW_BUILDERS", {k: traced(k, b) for k, b in build.VIEW_BUILDERS.items()})
    regions = toy_regions.copy()
    regions.index = pd.Index(["1", "2", "3", "4"], dtype="str", name="region_id")
    od = pd.DataFrame({"origin": ["1", "2"], "destination": ["2", "1"], "count": [4.0, 6.0]})
    seen: list[float] = []
    views = build_views(CityData(crs=regions.crs, regions=regions, od=od),
                        progress=Progress(callback=lambda s, f, m: seen.append(f)))
    assert calls == ["regions", "od"]
    assert views.available() == {"adjacency", "mobility"}
    assert seen[-1] == 1.0 and seen == sorted(seen)


def test_a_slow_poi_view_keeps_reporting_and_can_be_cancelled(sf_city: CityData, monkeypatch: pytest.MonkeyPatch,
                                                               cancel_at_message: Any) -> None:
    import threading

    from backend import progress as progress_mod
    from backend.views import build as build_mod

    monkeypatch.setattr(progress_mod, "HEARTBEAT_S", 0.0)
    release = threading.Event()
    real = build_mod.poi_points
    monkeypatch.setattr(build_mod, "poi_points", lambda city: release.wait(5.0) and real(city))
    progress, messages = cancel_at_message("POI descriptions", 3)
    with pytest.raises(Cancelled):
        build_mod.build_views(sf_city, progress=progress)
    release.set()
    assert messages.count("POI descriptions") == 3 and "views built" not in messages
