"""Vector readers: regions, POIs, land use and label points, on the sample city and on bad inputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import LineString, MultiPoint, Point, Polygon, box

from backend.config import LabelSpec, LandUseSource, PoiSource, RegionsSource
from backend.errors import ConfigError, InputError
from backend.io.city import CityData
from backend.io.vectors import read_label_points, read_landuse, read_pois, read_regions, tiny_regions

X0, Y0 = 550_000.0, 4_180_000.0  # lower-left corner of the toy grid (see conftest)


def _regions(path: Path, id_field: str = "rid", layer: str | None = None) -> tuple[gpd.GeoDataFrame, list[str]]:
    report: list[str] = []
    gdf, _ = read_regions(RegionsSource(str(path), id_field, layer), report)
    return gdf, report


# ------------------------------------------------------------------------------------------ regions
def test_sf_regions(sf_dir: Path) -> None:
    report: list[str] = []
    regions, crs = read_regions(RegionsSource(str(sf_dir / "sf_block_groups_crime_pop.geojson"), "GEO_ID"), report)
    raw = gpd.read_file(sf_dir / "sf_block_groups_crime_pop.geojson")
    assert crs.to_epsg() == 32610 and regions.crs == crs
    assert len(regions) == 579 and regions.index.name == "region_id"
    assert list(regions.index) == list(raw["GEO_ID"])  # input order, ids as given
    assert {"GEO_ID", "Population", "Vandalism", "Robbery", "Drugs", "CarTheft"} <= set(regions.columns)
    assert regions.geometry.is_valid.all()
    assert regions.geometry.area.sum() / 1e6 == pytest.approx(123.35, abs=0.05)  # README: 123.35 km2 in UTM 10N
    assert any("EPSG:32610" in line for line in report)


def test_projected_regions_keep_their_crs_and_int_ids_become_plain_strings(
    toy_regions: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]
) -> None:
    path = write_gpkg(toy_regions.to_crs("EPSG:26910"), "regions.gpkg")
    report: list[str] = []
    regions, crs = read_regions(RegionsSource(str(path), "rid"), report)
    assert crs.to_epsg() == 26910
    assert list(regions.index) == ["1", "2", "3", "4"]
    assert list(regions["pop"]) == [10.0, 20.0, 30.0, 40.0] and "rid" in regions.columns
    assert report == []


def test_float_ids_lose_their_decimal_zero(toy_regions: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]) -> None:
    toy_regions["rid"] = [12.0, 13.0, 14.0, 15.0]
    regions, _ = _regions(write_gpkg(toy_regions, "r.gpkg"))
    assert list(regions.index) == ["12", "13", "14", "15"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"\[regions\] layer .*nope\.gpkg: file not found"):
        _regions(tmp_path / "nope.gpkg")


def test_missing_layer_lists_layers(toy_regions: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]) -> None:
    path = write_gpkg(toy_regions, "r.gpkg", layer="blocks")
    with pytest.raises(InputError, match=r"no layer 'tracts'; its layers are \['blocks'\]"):
        _regions(path, layer="tracts")


def test_empty_layer(toy_regions: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]) -> None:
    with pytest.raises(InputError, match=r"\[regions\] layer .*empty\.gpkg: the layer has no features"):
        _regions(write_gpkg(toy_regions.iloc[:0], "empty.gpkg"))


def test_point_layer_is_not_regions(toy_regions: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]) -> None:
    points = toy_regions.set_geometry(toy_regions.centroid)
    with pytest.raises(InputError, match=r"regions must be polygons, found Point \(4\): choose a polygon layer"):
        _regions(write_gpkg(points, "points.gpkg"))


def test_regions_without_crs(toy_regions: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]) -> None:
    path = write_gpkg(toy_regions.set_crs(None, allow_override=True), "nocrs.gpkg")
    with pytest.raises(InputError, match=r"nocrs\.gpkg has no coordinate reference system .*Layer Properties"):
        _regions(path)


def test_missing_id_field_lists_fields(toy_regions: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]) -> None:
    with pytest.raises(
        InputError,
        match=r"id field 'GEOID' does not exist\. Available fields: \['rid', 'pop', "
        r"'kind'\]",
    ):
        _regions(write_gpkg(toy_regions, "r.gpkg"), id_field="GEOID")


def test_null_ids_are_counted(toy_regions: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]) -> None:
    toy_regions["kind"] = ["a", None, "", "d"]
    with pytest.raises(InputError, match=r"2 of 4 features have no value in the id field 'kind'"):
        _regions(write_gpkg(toy_regions, "r.gpkg"), id_field="kind")


def test_duplicate_ids_are_listed(toy_regions: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]) -> None:
    many = pd.concat([toy_regions] * 4, ignore_index=True)
    many["rid"] = [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 8, 9, 10]
    with pytest.raises(
        InputError,
        match=r"not unique: 6 values occur more than once \('1', '2', '3', '4', '5' "
        r"and 1 more\)",
    ):
        _regions(write_gpkg(many, "r.gpkg"))


def test_bow_tie_is_repaired_and_reported(toy_regions: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]) -> None:
    bow_tie = Polygon([(X0, Y0 + 300), (X0 + 100, Y0 + 400), (X0 + 100, Y0 + 300), (X0, Y0 + 400)])
    assert not bow_tie.is_valid
    extra = gpd.GeoDataFrame({"rid": [5], "pop": [1.0], "kind": ["e"]}, geometry=[bow_tie], crs="EPSG:32610")
    regions, report = _regions(write_gpkg(pd.concat([toy_regions, extra], ignore_index=True), "r.gpkg"))
    assert len(regions) == 5
    repaired = regions.geometry["5"]
    assert repaired.is_valid and repaired.geom_type == "MultiPolygon"
    assert repaired.area == pytest.approx(5000.0)  # two triangles of 2,500 m2
    assert any(line.startswith("Repaired 1 invalid region geometries") for line in report)


def test_geometry_empty_after_repair_names_the_region(
    toy_regions: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]
) -> None:
    flat = Polygon([(X0, Y0 + 300), (X0 + 50, Y0 + 350), (X0 + 100, Y0 + 400), (X0, Y0 + 300)])  # no area
    extra = gpd.GeoDataFrame({"rid": [77], "pop": [1.0], "kind": ["e"]}, geometry=[flat], crs="EPSG:32610")
    with pytest.raises(InputError, match=r"1 region geometries have no area left after repair \(.*ids '77'\)"):
        _regions(write_gpkg(pd.concat([toy_regions, extra], ignore_index=True), "r.gpkg"))


def test_validity_is_checked_before_reprojecting(
    toy_regions: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]
) -> None:
    # A collinear ring in degrees is invalid; reprojected to UTM its points leave the line and it would pass
    # as a valid sliver, so the check must come first.
    grid = toy_regions.to_crs("EPSG:4326")
    x, y, d = -122.4375, 37.765625, 2.0**-10  # exactly representable: the ring is exactly collinear
    flat = Polygon([(x, y), (x + d, y + d), (x + 2 * d, y + 2 * d), (x, y)])
    moved = gpd.GeoSeries([flat], crs="EPSG:4326").to_crs("EPSG:32610").iloc[0]
    assert not flat.is_valid and moved.is_valid and moved.area > 0  # reprojected, it would pass as a sliver
    extra = gpd.GeoDataFrame({"rid": [77], "pop": [1.0], "kind": ["e"]}, geometry=[flat], crs="EPSG:4326")
    path = write_gpkg(pd.concat([grid, extra], ignore_index=True), "r.gpkg")
    with pytest.raises(InputError, match=r"no area left after repair .*ids '77'"):
        _regions(path)


def test_bow_tie_repair_names_the_region(toy_regions: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]) -> None:
    bow_tie = Polygon([(X0, Y0 + 300), (X0 + 100, Y0 + 400), (X0 + 100, Y0 + 300), (X0, Y0 + 400)])
    extra = gpd.GeoDataFrame({"rid": [5], "pop": [1.0], "kind": ["e"]}, geometry=[bow_tie], crs="EPSG:32610")
    _, report = _regions(write_gpkg(pd.concat([toy_regions, extra], ignore_index=True), "r.gpkg"))
    assert any("Repaired 1 invalid region geometries" in line and "ids '5'" in line for line in report)


def test_tiny_regions_are_reported(toy_regions: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]) -> None:
    sliver = box(X0 + 300, Y0, X0 + 300.01, Y0 + 0.01)  # 1e-4 m2 beside 10,000 m2 squares
    extra = gpd.GeoDataFrame({"rid": [9], "pop": [1.0], "kind": ["e"]}, geometry=[sliver], crs="EPSG:32610")
    regions, report = _regions(write_gpkg(pd.concat([toy_regions, extra], ignore_index=True), "r.gpkg"))
    assert list(tiny_regions(regions.geometry.area)) == ["9"]
    assert any(line.startswith("1 regions are far smaller than the others") and "'9'" in line for line in report)
    _, clean = _regions(write_gpkg(toy_regions, "clean.gpkg"))
    assert not any("far smaller" in line for line in clean)


# --------------------------------------------------------------------------------------------- POIs
def test_sf_pois(sf_city: CityData) -> None:
    pois = sf_city.pois
    assert pois is not None
    assert len(pois) == 2551 and pois.index.name == "feature_id"
    assert list(pois.columns) == ["category", "name", "region_id", "geometry"]
    assert pois.crs == sf_city.crs and (pois.geom_type == "Point").all()
    assert pois["region_id"].isin(sf_city.regions.index).all()
    assert pois["region_id"].nunique() == 403
    assert pois["name"].isna().sum() > 0 and pois["name"].dropna().map(type).eq(str).all()
    assert "12 of 2,563 POIs fall outside every region and were ignored" in "\n".join(sf_city.report)
    assert "176 of 579 regions hold no POI." in sf_city.report


@pytest.fixture
def toy_region_frame(toy_regions: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The toy regions as read_regions returns them (index region_id)."""
    out = toy_regions.copy()
    out.index = pd.Index(["1", "2", "3", "4"], dtype="str", name="region_id")
    return out


def _pois(points: list, categories: list, names: list | None = None, crs: str = "EPSG:32610") -> gpd.GeoDataFrame:
    data = {"cat": categories, "label": names if names is not None else [f"poi {i}" for i in range(len(points))]}
    return gpd.GeoDataFrame(data, geometry=points, crs=crs)


def test_poi_rules(toy_region_frame: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]) -> None:
    points = [
        Point(X0 + 50, Y0 + 50),  # region 1
        Point(X0 + 100, Y0 + 50),  # on the boundary of regions 1 and 2: first region (1)
        Point(X0 + 150, Y0 + 50),  # region 2
        Point(X0 + 500, Y0 + 500),  # outside
        Point(X0 + 60, Y0 + 60),  # no category: dropped
    ]
    gdf = _pois(points, ["cafe", "bank", "cafe", "bar", None], ["A", None, "C", "D", "E"])
    report: list[str] = []
    pois = read_pois(
        PoiSource(str(write_gpkg(gdf, "p.gpkg")), "cat", "label"), toy_region_frame, toy_region_frame.crs, report
    )
    assert list(pois["region_id"]) == ["1", "1", "2"]
    assert list(pois["category"]) == ["cafe", "bank", "cafe"]
    assert list(pois["name"]) == ["A", None, "C"]
    assert list(pois.index) == [1, 2, 3]  # GeoPackage feature ids
    assert pois.crs.to_epsg() == 32610
    assert pois.geometry.x.iloc[0] == pytest.approx(X0 + 50, abs=1e-3)
    text = "\n".join(report)
    assert "1 POIs without a category ('cat') were ignored" in text
    assert "1 of 4 POIs fall outside every region and were ignored" in text
    assert "2 of 4 regions hold no POI." in text


def test_pois_without_name_field_have_none(toy_region_frame: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]) -> None:
    path = write_gpkg(_pois([Point(X0 + 50, Y0 + 50)], ["cafe"]), "p.gpkg")
    pois = read_pois(PoiSource(str(path), "cat"), toy_region_frame, toy_region_frame.crs, [])
    assert pois["name"].isna().all()


def test_multipoints_become_centroids(toy_region_frame: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]) -> None:
    gdf = _pois([MultiPoint([(X0 + 10, Y0 + 10), (X0 + 30, Y0 + 30)])], ["cafe"])
    report: list[str] = []
    pois = read_pois(PoiSource(str(write_gpkg(gdf, "p.gpkg")), "cat"), toy_region_frame, toy_region_frame.crs, report)
    assert pois.geometry.iloc[0].equals(Point(X0 + 20, Y0 + 20))
    assert any("1 multi-point features were replaced by their centroid" in line for line in report)


def test_line_pois_suggest_centroids(toy_region_frame: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]) -> None:
    gdf = _pois([LineString([(X0, Y0), (X0 + 10, Y0 + 10)])], ["road"])
    with pytest.raises(InputError, match=r"\[pois\] layer .*expected points, found LineString \(1\).*Centroids"):
        read_pois(PoiSource(str(write_gpkg(gdf, "p.gpkg")), "cat"), toy_region_frame, toy_region_frame.crs, [])


def test_unknown_category_field_lists_fields(
    toy_region_frame: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]
) -> None:
    path = write_gpkg(_pois([Point(X0 + 50, Y0 + 50)], ["cafe"]), "p.gpkg")
    with pytest.raises(
        InputError,
        match=r"category field 'amenity' does not exist\. Available fields: "
        r"\['cat', 'label'\]",
    ):
        read_pois(PoiSource(str(path), "amenity"), toy_region_frame, toy_region_frame.crs, [])
    with pytest.raises(InputError, match=r"name field 'nom' does not exist"):
        read_pois(PoiSource(str(path), "cat", "nom"), toy_region_frame, toy_region_frame.crs, [])


def test_pois_outside_every_region_is_an_error(
    toy_region_frame: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]
) -> None:
    # Coordinates right, CRS label wrong: the points land far away.
    gdf = _pois([Point(X0 + 50, Y0 + 50)], ["cafe"]).set_crs("EPSG:32611", allow_override=True)
    with pytest.raises(InputError, match=r"none of the 1 POIs falls inside a region\. .*wrong CRS"):
        read_pois(PoiSource(str(write_gpkg(gdf, "p.gpkg")), "cat"), toy_region_frame, toy_region_frame.crs, [])


def test_pois_without_crs(toy_region_frame: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]) -> None:
    gdf = _pois([Point(X0 + 50, Y0 + 50)], ["cafe"]).set_crs(None, allow_override=True)
    with pytest.raises(InputError, match=r"\[pois\] layer .* has no coordinate reference system"):
        read_pois(PoiSource(str(write_gpkg(gdf, "p.gpkg")), "cat"), toy_region_frame, toy_region_frame.crs, [])


# ----------------------------------------------------------------------------------------- land use
def test_landuse_is_reprojected_repaired_and_clipped_to_the_regions(
    toy_region_frame: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]
) -> None:
    bow_tie = Polygon([(X0, Y0), (X0 + 100, Y0 + 100), (X0 + 100, Y0), (X0, Y0 + 100)])
    gdf = gpd.GeoDataFrame(
        {"lu": ["park", "housing", "water", None]},
        geometry=[box(X0, Y0, X0 + 200, Y0 + 50), bow_tie, box(X0 + 900, Y0, X0 + 950, Y0 + 50), box(X0, Y0, 1, 1)],
        crs="EPSG:32610",
    ).to_crs("EPSG:4326")
    report: list[str] = []
    lu = read_landuse(
        LandUseSource(str(write_gpkg(gdf, "lu.gpkg")), "lu"), toy_region_frame, toy_region_frame.crs, report
    )
    assert list(lu["landuse_class"]) == ["park", "housing"]
    assert lu.index.name == "feature_id" and lu.crs.to_epsg() == 32610
    assert lu.geometry.is_valid.all()
    text = "\n".join(report)
    assert "1 land-use features without a class were ignored" in text
    assert "Repaired 1 invalid land-use geometries" in text
    assert "1 of 3 land-use polygons lie outside every region" in text


def test_landuse_errors(toy_region_frame: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]) -> None:
    gdf = gpd.GeoDataFrame({"lu": ["park"]}, geometry=[box(X0, Y0, X0 + 10, Y0 + 10)], crs="EPSG:32610")
    path = write_gpkg(gdf, "lu.gpkg")
    with pytest.raises(InputError, match=r"\[landuse\] layer .*class field 'landuse' does not exist.*\['lu'\]"):
        read_landuse(LandUseSource(str(path), "landuse"), toy_region_frame, toy_region_frame.crs, [])
    points = gdf.set_geometry(gdf.centroid)
    with pytest.raises(InputError, match=r"land use must be polygons, found Point \(1\)"):
        read_landuse(
            LandUseSource(str(write_gpkg(points, "pts.gpkg")), "lu"), toy_region_frame, toy_region_frame.crs, []
        )


# ------------------------------------------------------------------------------------- label points
def test_sf_label_points_match_the_polygon_counts(sf_city: CityData) -> None:
    assert sf_city.labels is not None
    counts = sf_city.labels["robbery_points"]
    assert counts.index.equals(sf_city.regions.index)
    assert counts.sum() == 2759  # 2,761 robberies, 2 outside every block group
    assert np.corrcoef(counts, sf_city.regions["Robbery"])[0, 1] > 0.99
    assert "2 of 2,761 points fall outside every region" in "\n".join(sf_city.report)


def test_label_points_filter_and_zero_counts(
    toy_region_frame: gpd.GeoDataFrame, write_gpkg: Callable[..., Path]
) -> None:
    points = [Point(X0 + 10, Y0 + 10), Point(X0 + 20, Y0 + 20), Point(X0 + 150, Y0 + 150), Point(X0 + 900, Y0)]
    path = write_gpkg(_pois(points, ["THEFT", "THEFT", "THEFT", "THEFT"]), "crimes.gpkg")
    report: list[str] = []
    spec = LabelSpec("theft", points=str(path), points_filter_field="cat", points_filter_value="THEFT")
    counts = read_label_points(spec, toy_region_frame, toy_region_frame.crs, report)
    assert counts.to_dict() == {"1": 2, "2": 0, "3": 0, "4": 1}
    assert "1 of 4 points fall outside every region" in report[0]
    with pytest.raises(InputError, match=r"no point has cat = 'ROBBERY'\. Values present include \['THEFT'\]"):
        read_label_points(
            LabelSpec("r", points=str(path), points_filter_field="cat", points_filter_value="ROBBERY"),
            toy_region_frame,
            toy_region_frame.crs,
            [],
        )
    with pytest.raises(InputError, match=r"filter field 'category' does not exist"):
        read_label_points(
            LabelSpec("r", points=str(path), points_filter_field="category", points_filter_value="x"),
            toy_region_frame,
            toy_region_frame.crs,
            [],
        )
    with pytest.raises(ConfigError, match="give both points_filter_field and points_filter_value"):
        read_label_points(
            LabelSpec("r", points=str(path), points_filter_field="cat"), toy_region_frame, toy_region_frame.crs, []
        )


def test_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "bad.gpkg").write_text("not a geopackage")
    with pytest.raises(InputError, match=r"\[regions\] layer .*bad\.gpkg: cannot be read as a vector layer"):
        _regions(tmp_path / "bad.gpkg")


def test_points_are_assigned_in_chunks_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunked spatial-index queries give what one query gives: inside -> that region; on a shared edge -> the
    first region in order; outside -> NaN."""
    import shapely

    from backend.io import _layers

    regions = gpd.GeoDataFrame(geometry=[shapely.box(i, 0, i + 1, 1) for i in range(5)], crs=32610,
                               index=pd.Index([f"r{i}" for i in range(5)], name="region_id"))
    rng = np.random.default_rng(0)
    xy = np.vstack([rng.uniform([-1, -0.5], [6, 1.5], size=(300, 2)), [[1.0, 0.5], [2.0, 0.2], [9.0, 9.0]]])
    points = gpd.GeoSeries(shapely.points(xy), crs=32610)
    whole = _layers.assign_points(points, regions)
    monkeypatch.setattr(_layers, "ASSIGN_CHUNK", 7)
    chunked = _layers.assign_points(points, regions)
    pd.testing.assert_series_equal(chunked, whole)
    assert list(chunked.iloc[-3:].fillna("outside")) == ["r0", "r1", "outside"]  # edges: the first region
    inside = (xy[:, 0] > 0) & (xy[:, 0] < 5) & (xy[:, 1] > 0) & (xy[:, 1] < 1)
    assert chunked[inside].notna().all() and chunked[(xy[:, 1] > 1) | (xy[:, 1] < 0)].isna().all()


def test_large_geopackage_layers_are_read_by_feature_id_ranges(sf_dir: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A GeoPackage is read by ranges of its feature ids (SQLite walks skipped rows: reading by offsets grows
    quadratically), ids with gaps included; the frame is what one read gives."""
    from backend.io import _layers

    pois = gpd.read_file(sf_dir / "sf_pois_osm.geojson")
    path = tmp_path / "pois.gpkg"
    pois.to_file(path, layer="pois")
    import sqlite3

    with sqlite3.connect(path) as con:  # feature ids with a gap, as after deleting features in QGIS
        con.execute("DELETE FROM pois WHERE fid BETWEEN 700 AND 1300")
    whole = _layers.read_layer(path, "pois", "pois", fid_as_index=True)
    filters: list[str | None] = []
    real = gpd.read_file
    monkeypatch.setattr(_layers.gpd, "read_file",
                        lambda *a, **k: filters.append(k.get("where")) or real(*a, **k))
    monkeypatch.setattr(_layers, "READ_CHUNK", 500)
    chunked = _layers.read_layer(path, "pois", "pois", fid_as_index=True)
    pd.testing.assert_frame_equal(chunked, whole)
    assert len(whole) == 2563 - 601 and whole.index[-1] == 2563
    assert filters == [f'"fid" >= {lo} AND "fid" < {lo + 500}' for lo in range(1, 2564, 500)]


def test_large_layers_are_read_in_chunks_with_the_same_result(sf_dir: Path, sf_config_dict: dict[str, Any],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer of more than READ_CHUNK features is read READ_CHUNK at a time (one pyogrio read of millions of
    features holds the GIL, so the progress heartbeat stops); the frame, fids included, is what one read gives,
    and so are the POIs read_pois makes of it with the string conversions also in chunks."""
    from backend.io import _layers

    src = PoiSource(str(sf_dir / sf_config_dict["pois"]["path"]), "category", "name")
    regions, crs = read_regions(RegionsSource(str(sf_dir / sf_config_dict["regions"]["path"]),
                                              sf_config_dict["regions"]["id_field"]), [])
    whole_layer = _layers.read_layer(src.path, None, "pois", fid_as_index=True)
    whole_regions = _layers.read_layer(sf_dir / sf_config_dict["regions"]["path"], None, "regions")
    whole_pois = read_pois(src, regions, crs, [])
    reads: list[tuple[int, int]] = []
    real = gpd.read_file

    def spy(*args: Any, **kwargs: Any) -> gpd.GeoDataFrame:
        reads.append((kwargs.get("skip_features", 0), kwargs.get("max_features", -1)))
        return real(*args, **kwargs)

    monkeypatch.setattr(_layers.gpd, "read_file", spy)
    monkeypatch.setattr(_layers, "READ_CHUNK", 500)
    chunks: list[int] = []
    real_chunk = _layers._values_to_str_chunk
    monkeypatch.setattr(_layers, "_values_to_str_chunk", lambda v: chunks.append(len(v)) or real_chunk(v))
    monkeypatch.setattr(_layers, "STR_CHUNK", 300)

    layer = _layers.read_layer(src.path, None, "pois", fid_as_index=True)
    assert len(layer) == 2563 and reads == [(start, 500) for start in range(0, 2563, 500)]
    pd.testing.assert_frame_equal(layer, whole_layer)
    reads.clear()
    pd.testing.assert_frame_equal(_layers.read_layer(sf_dir / sf_config_dict["regions"]["path"], None, "regions"),
                                  whole_regions)  # 579 regions: two reads, a fresh RangeIndex
    assert reads == [(0, 500), (500, 500)]
    pois = read_pois(src, regions, crs, [])
    assert chunks and max(chunks) <= 300 and sum(chunks) >= len(layer)  # category and name fields, in chunks
    pd.testing.assert_frame_equal(pois, whole_pois)
    assert pois["category"].dtype == "str" and pois["region_id"].dtype == "str"


def test_str_series_converts_in_chunks_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.io import _layers

    values = np.array(["a", "b", None, "c", "d", "e", "f"], dtype=object)
    whole = pd.Series(values, dtype="str")
    monkeypatch.setattr(_layers, "STR_CHUNK", 3)
    made: list[int] = []
    real = pd.Series

    def spy(data: Any = None, *args: Any, **kwargs: Any) -> pd.Series:
        if kwargs.get("dtype") == "str":
            made.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(_layers.pd, "Series", spy)
    out = _layers.str_series(values, pd.Index(list("pqrstuv")))
    monkeypatch.undo()
    assert made == [3, 3, 1]
    pd.testing.assert_series_equal(out, whole.set_axis(pd.Index(list("pqrstuv"))))
    assert _layers.str_series(np.array([], dtype=object)).dtype == "str"
