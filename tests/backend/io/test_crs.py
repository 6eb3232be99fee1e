"""Choice of the metric CRS: projected metres kept, degrees / feet / Mercator replaced by local UTM."""

from __future__ import annotations

import geopandas as gpd
import pytest
from pyproj import CRS

from backend.errors import InputError
from backend.io.crs import choose_metric_crs


def test_projected_metric_crs_is_kept(toy_regions: gpd.GeoDataFrame) -> None:
    report: list[str] = []
    layer = toy_regions.to_crs("EPSG:26910")  # NAD83 / UTM 10N: projected, metres, not what UTM estimation gives
    assert choose_metric_crs(layer, report=report) == CRS("EPSG:26910")
    assert report == []


def test_geographic_crs_becomes_local_utm(toy_regions: gpd.GeoDataFrame) -> None:
    report: list[str] = []
    crs = choose_metric_crs(toy_regions.to_crs("EPSG:4326"), "[regions] layer x.gpkg", report)
    assert crs.to_epsg() == 32610
    assert "geographic" in report[0] and "EPSG:32610" in report[0]


def test_crs_in_feet_is_replaced_and_reported(toy_regions: gpd.GeoDataFrame) -> None:
    report: list[str] = []
    crs = choose_metric_crs(toy_regions.to_crs("EPSG:2227"), "[regions] layer x.gpkg", report)
    assert crs.to_epsg() == 32610
    assert "foot" in report[0] and "EPSG:2227" in report[0]


def test_web_mercator_is_replaced_because_it_distorts_areas(toy_regions: gpd.GeoDataFrame) -> None:
    report: list[str] = []
    assert choose_metric_crs(toy_regions.to_crs("EPSG:3857"), report=report).to_epsg() == 32610
    assert "Mercator" in report[0]


def test_layer_without_crs_is_an_input_error(toy_regions: gpd.GeoDataFrame) -> None:
    with pytest.raises(
        InputError,
        match=r"\[regions\] layer x.gpkg has no coordinate reference system.*Layer "
        r"Properties > Source",
    ):
        choose_metric_crs(toy_regions.set_crs(None, allow_override=True), "[regions] layer x.gpkg")
