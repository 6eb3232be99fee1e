"""POI files: OpenStreetMap extracts (a real .osm.pbf written with pyosmium) and GeoParquet (Overture places and
a plain point layer written with pyarrow), read through the configuration like any POI layer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import box

from backend.config import config_from_dict
from backend.errors import ConfigError, InputError
from backend.io.city import read_city
from backend.io.poi_files import OSM_TAGS, osm_category, parse_osm_tags, poi_file_kind
from tests.backend.conftest import TOY_X0, TOY_Y0

_TO_LONLAT = Transformer.from_crs("EPSG:32610", "EPSG:4326", always_xy=True)


def _lonlat(x: float, y: float) -> tuple[float, float]:
    """Degrees of a point given in metres of the toy grid (EPSG:32610)."""
    return _TO_LONLAT.transform(TOY_X0 + x, TOY_Y0 + y)


def write_pbf(path: Path, nodes: list[dict[str, Any]], ways: list[dict[str, Any]] = (),
              relations: list[dict[str, Any]] = ()) -> Path:
    """Write a real .osm.pbf: nodes ``{id, xy (toy metres), tags}``, ways ``{id, nodes, tags}``, relations
    ``{id, members: [(type, ref, role)], tags}``."""
    import osmium
    from osmium.osm.mutable import Node, Relation, Way

    writer = osmium.SimpleWriter(str(path))
    for n in nodes:
        writer.add_node(Node(id=n["id"], location=_lonlat(*n["xy"]), tags=n.get("tags", {})))
    for w in ways:
        writer.add_way(Way(id=w["id"], nodes=w["nodes"], tags=w.get("tags", {})))
    for r in relations:
        writer.add_relation(Relation(id=r["id"], members=r["members"], tags=r.get("tags", {})))
    writer.close()
    return path


def _osm_city(tmp_path: Path) -> Path:
    """Nodes with POI tags, a tagged closed way (a clinic drawn as a polygon), a multipolygon relation (a market
    hall, its outer ring an untagged way), untagged nodes, a railway signal (not a station), and a cafe 50 km away
    (outside the regions' extent)."""
    corners = [(110, 110), (170, 110), (170, 170), (110, 170)]  # a 60 m square inside region 4
    hall = [(120, 60), (180, 60), (180, 90), (120, 90)]  # inside region 2
    nodes = [
        {"id": 1, "xy": (20, 20), "tags": {"amenity": "cafe", "name": "Blue Bottle"}},
        {"id": 2, "xy": (150, 30), "tags": {"shop": "bakery", "amenity": "restaurant"}},  # amenity wins
        {"id": 3, "xy": (30, 150), "tags": {"railway": "station", "name": "Civic Center", "historic": "yes"}},
        {"id": 4, "xy": (40, 160), "tags": {"railway": "signal"}},  # not a station: no POI
        {"id": 5, "xy": (60, 60), "tags": {}},  # untagged
        {"id": 6, "xy": (70, 70), "tags": {"created_by": "JOSM"}},  # tags, none of them a POI tag
        {"id": 7, "xy": (50_000, 50_000), "tags": {"amenity": "bar"}},  # far outside
        *[{"id": 10 + i, "xy": xy} for i, xy in enumerate(corners)],
        *[{"id": 20 + i, "xy": xy} for i, xy in enumerate(hall)],
    ]
    ways = [{"id": 100, "nodes": [10, 11, 12, 13, 10], "tags": {"healthcare": "clinic", "name": "Clinic"}},
            {"id": 101, "nodes": [20, 21, 22, 23, 20]}]
    relations = [{"id": 200, "members": [("w", 101, "outer")],
                  "tags": {"type": "multipolygon", "amenity": "marketplace", "name": "Market Hall"}}]
    return write_pbf(tmp_path / "city.osm.pbf", nodes, ways, relations)


def _config(tmp_path: Path, write_gpkg, toy_regions, pois: dict[str, Any]) -> dict[str, Any]:
    write_gpkg(toy_regions, "regions.gpkg")
    return {"output_dir": str(tmp_path / "out"), "regions": {"path": "regions.gpkg", "id_field": "rid"},
            "pois": pois}


def _read(tmp_path: Path, cfg: dict[str, Any]):
    return read_city(config_from_dict(cfg, base_dir=tmp_path))


def test_osm_pbf_points_polygon_centroids_categories_and_names(tmp_path, write_gpkg, toy_regions) -> None:
    _osm_city(tmp_path)
    city = _read(tmp_path, _config(tmp_path, write_gpkg, toy_regions, {"path": "city.osm.pbf"}))
    pois = city.pois.sort_index()
    assert list(pois.index) == ["n1", "n2", "n3", "r200", "w100"]
    assert list(pois["category"]) == ["amenity=cafe", "amenity=restaurant", "railway=station", "amenity=marketplace",
                                      "healthcare=clinic"]
    assert [n if isinstance(n, str) else None for n in pois["name"]] == ["Blue Bottle", None, "Civic Center",
                                                                          "Market Hall", "Clinic"]
    assert list(pois["region_id"]) == ["1", "2", "3", "2", "4"]
    # the clinic polygon became its centroid, in the run's metric CRS
    centroid = pois.geometry["w100"]
    assert centroid.geom_type == "Point"
    assert abs(centroid.x - (TOY_X0 + 140)) < 0.5 and abs(centroid.y - (TOY_Y0 + 140)) < 0.5
    assert any("3 tagged nodes and 2 tagged areas" in line for line in city.report)


def test_osm_tag_filter_and_priority_order(tmp_path, write_gpkg, toy_regions) -> None:
    _osm_city(tmp_path)
    cfg = _config(tmp_path, write_gpkg, toy_regions, {"path": "city.osm.pbf", "osm_tags": ["shop", "amenity=cafe"]})
    pois = _read(tmp_path, cfg).pois.sort_index()
    # shop comes first now: the restaurant-bakery is a bakery; the station, the market and the clinic are no POIs
    assert dict(zip(pois.index, pois["category"], strict=True)) == {"n1": "amenity=cafe", "n2": "shop=bakery"}


def test_osm_category_and_tag_parsing() -> None:
    filters = parse_osm_tags(None)
    assert [k if v is None else f"{k}={v}" for k, v in filters] == list(OSM_TAGS)
    assert osm_category({"railway": "signal", "sport": "tennis"}, filters) == "sport=tennis"
    assert osm_category({"railway": "station", "historic": "yes"}, filters) == "railway=station"
    assert osm_category({"amenity": "  ", "shop": "books"}, filters) == "shop=books"
    assert osm_category({"name": "x"}, filters) is None
    for bad in ([], ["amenity="], ["=cafe"], ['amenity"']):
        with pytest.raises(ConfigError, match="osm_tags"):
            parse_osm_tags(bad)
    assert poi_file_kind("x/Region.OSM.PBF") == "osm" and poi_file_kind("p.parquet") == "parquet"
    assert poi_file_kind("pois.gpkg") is None


def test_osm_settings_checked_before_reading(tmp_path, write_gpkg, toy_regions) -> None:
    cfg = _config(tmp_path, write_gpkg, toy_regions, {"path": "city.osm.pbf", "category_field": "amenity"})
    with pytest.raises(ConfigError, match="OpenStreetMap extract takes no category_field"):
        config_from_dict(cfg, base_dir=tmp_path)
    cfg["pois"] = {"path": "pois.gpkg", "category_field": "c", "osm_tags": ["amenity"]}
    with pytest.raises(ConfigError, match="osm_tags applies to OpenStreetMap extracts"):
        config_from_dict(cfg, base_dir=tmp_path)
    cfg["pois"] = {"path": "pois.gpkg"}
    with pytest.raises(ConfigError, match="needs category_field"):
        config_from_dict(cfg, base_dir=tmp_path)


def test_osm_without_matching_tags_is_a_clear_error(tmp_path, write_gpkg, toy_regions) -> None:
    write_pbf(tmp_path / "empty.osm.pbf", [{"id": 1, "xy": (20, 20), "tags": {"highway": "crossing"}},
                                           {"id": 2, "xy": (50_000, 0), "tags": {"amenity": "cafe"}}])
    cfg = _config(tmp_path, write_gpkg, toy_regions, {"path": "empty.osm.pbf"})
    with pytest.raises(InputError, match=r"empty\.osm\.pbf.*no node or area inside the regions' extent.*osm_tags"):
        _read(tmp_path, cfg)


def test_truncated_pbf_is_a_clear_error(tmp_path, write_gpkg, toy_regions) -> None:
    data = _osm_city(tmp_path).read_bytes()
    (tmp_path / "cut.osm.pbf").write_bytes(data[: len(data) // 2])
    cfg = _config(tmp_path, write_gpkg, toy_regions, {"path": "cut.osm.pbf"})
    with pytest.raises(InputError, match=r"cut\.osm\.pbf.*cannot be read as an OpenStreetMap extract.*download it"):
        _read(tmp_path, cfg)


# ------------------------------------------------------------------------------------------------- GeoParquet
def _write_geoparquet(path: Path, columns: dict[str, pa.Array], points: list[tuple[float, float]],
                      crs: str | None = None) -> Path:
    wkb = shapely.to_wkb(shapely.points(np.asarray(points, dtype=float)))
    geo = {"version": "1.1.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"]}}}
    if crs is not None:
        geo["columns"]["geometry"]["crs"] = json.loads(gpd.GeoSeries([], crs=crs).crs.to_json())
    table = pa.table({**columns, "geometry": pa.array(list(wkb), type=pa.binary())})
    table = table.replace_schema_metadata({b"geo": json.dumps(geo).encode()})
    pq.write_table(table, path, row_group_size=2)  # several row groups: read batch by batch
    return path


def _overture(tmp_path: Path) -> Path:
    """Overture places (the fields planners get: ``names.primary``, ``categories.primary``/``alternate``) in
    OGC:CRS84 (no crs in the metadata), one of them 50 km away."""
    xy = [(20, 20), (150, 30), (30, 150), (50_000, 50_000)]
    names = pa.array([{"primary": "Blue Bottle"}, {"primary": None}, {"primary": "Library"}, {"primary": "Far"}],
                     type=pa.struct([("primary", pa.string())]))
    cats = pa.array([{"primary": "coffee_shop", "alternate": ["cafe"]}, {"primary": "bakery", "alternate": []},
                     {"primary": "library", "alternate": None}, {"primary": "bar", "alternate": None}],
                    type=pa.struct([("primary", pa.string()), ("alternate", pa.list_(pa.string()))]))
    ids = pa.array(["08f1", "08f2", "08f3", "08f4"])
    return _write_geoparquet(tmp_path / "places.parquet", {"id": ids, "names": names, "categories": cats},
                             [_lonlat(x, y) for x, y in xy])


def test_overture_places(tmp_path, write_gpkg, toy_regions) -> None:
    _overture(tmp_path)
    city = _read(tmp_path, _config(tmp_path, write_gpkg, toy_regions, {"path": "places.parquet"}))
    pois = city.pois
    assert list(pois["category"]) == ["coffee_shop", "bakery", "library"]
    assert [n if isinstance(n, str) else None for n in pois["name"]] == ["Blue Bottle", None, "Library"]
    assert list(pois["region_id"]) == ["1", "2", "3"]
    assert any("3 of 4 features lie inside the regions' extent" in line for line in city.report)


def test_generic_geoparquet_point_layer_with_category_field(tmp_path, write_gpkg, toy_regions) -> None:
    points = [(TOY_X0 + 20, TOY_Y0 + 20), (TOY_X0 + 120, TOY_Y0 + 120), (TOY_X0 + 120, TOY_Y0 + 20)]
    _write_geoparquet(tmp_path / "shops.parquet", {"kind": pa.array(["bank", "park", None]),
                                                   "label": pa.array(["A", "B", "C"])}, points, crs="EPSG:32610")
    cfg = _config(tmp_path, write_gpkg, toy_regions,
                  {"path": "shops.parquet", "category_field": "kind", "name_field": "label"})
    city = _read(tmp_path, cfg)
    assert list(city.pois["category"]) == ["bank", "park"] and list(city.pois["name"]) == ["A", "B"]
    assert list(city.pois["region_id"]) == ["1", "4"]
    assert any("1 POIs without a category" in line for line in city.report)


def test_geoparquet_without_the_category_column(tmp_path, write_gpkg, toy_regions) -> None:
    _write_geoparquet(tmp_path / "plain.parquet", {"label": pa.array(["A"])}, [(TOY_X0 + 20, TOY_Y0 + 20)],
                      crs="EPSG:32610")
    cfg = _config(tmp_path, write_gpkg, toy_regions, {"path": "plain.parquet"})
    with pytest.raises(InputError, match=r"plain\.parquet.*no category column 'categories\.primary'.*\['label', "
                                         r"'geometry'\].*set \[pois\] category_field"):
        _read(tmp_path, cfg)
    cfg["pois"]["category_field"] = "kind"
    with pytest.raises(InputError, match=r"no category column 'kind'.*Choose one of its columns"):
        _read(tmp_path, cfg)


def test_parquet_without_geometry_metadata_is_refused(tmp_path, write_gpkg, toy_regions) -> None:
    pq.write_table(pa.table({"category": ["a"]}), tmp_path / "table.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    cfg = _config(tmp_path, write_gpkg, toy_regions, {"path": "table.parquet", "category_field": "category"})
    with pytest.raises(InputError, match=r"table\.parquet.*no GeoParquet metadata"):
        _read(tmp_path, cfg)
    cfg["pois"]["path"] = "broken.parquet"
    with pytest.raises(InputError, match=r"broken\.parquet.*cannot be read as GeoParquet"):
        _read(tmp_path, cfg)


def test_region_extent_used_for_clipping(tmp_path, write_gpkg, toy_regions) -> None:
    """Points beside the grid but inside its bounding box are read, then reported as outside every region."""
    regions = toy_regions.iloc[[0, 3]]  # diagonal squares: the bounding box covers squares 2 and 3 too
    write_gpkg(regions, "regions.gpkg")
    _overture(tmp_path)
    cfg = {"output_dir": str(tmp_path / "out"), "regions": {"path": "regions.gpkg", "id_field": "rid"},
           "pois": {"path": "places.parquet"}}
    city = _read(tmp_path, cfg)
    assert list(city.pois["region_id"]) == ["1"]
    assert any("3 of 4 features lie inside" in line for line in city.report)
    assert any("2 of 3 POIs fall outside every region" in line for line in city.report)
    assert box(*regions.total_bounds).area == pytest.approx(200 * 200)


def test_bad_pbf_through_the_cli_and_the_worker_writes_nothing(tmp_path, write_gpkg, toy_regions) -> None:
    """A truncated extract: exit code 2 from the CLI, an ``input`` error from the worker, no output folder."""

    from backend.cli import main
    from tests.backend.test_worker import Proc

    data = _osm_city(tmp_path).read_bytes()
    (tmp_path / "cut.osm.pbf").write_bytes(data[: len(data) // 2])
    cfg = _config(tmp_path, write_gpkg, toy_regions, {"path": "cut.osm.pbf"})
    cfg.update(clustering={"k": 2}, prediction=None)  # four regions
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    assert main(["run", str(tmp_path / "c.json"), "--quiet"]) == 2
    assert not (tmp_path / "out").exists()
    worker = Proc()
    try:
        assert worker.read()["event"] == "ready"
        params = config_from_dict(cfg, base_dir=tmp_path).to_dict()
        worker.send({"id": 1, "action": "run", "params": params})
        ev, _ = worker.until("error", 1)
        assert ev["kind"] == "input" and "cut.osm.pbf" in ev["message"] and "download it again" in ev["message"]
        assert worker.close() == 0
    finally:
        if worker.p.poll() is None:
            worker.p.kill()
    assert not (tmp_path / "out").exists()
