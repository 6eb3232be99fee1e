"""bench/poi_read.py: the extract and the GeoPackage hold the same POIs, and both children read all of them."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd

from bench import poi_read


def test_bench_reads_the_same_pois_from_both_files(tmp_path: Path, capsys) -> None:
    out = tmp_path / "result.json"
    assert poi_read.main(["--n", "2000", "--out", str(tmp_path / "data"), "--json", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["n"] == 2000 and result["n_pois"] == 2000 + poi_read.N_AREAS and result["n_untagged"] == 200
    rows = {r["source"]: r for r in result["rows"]}
    assert [r["source"] for r in result["rows"]] == ["gpkg", "pbf"]  # the baseline first
    for row in rows.values():
        assert set(row) >= {"features", "seconds", "peak_rss_mb", "rss_before_mb"}
        assert row["seconds"] > 0 and row["peak_rss_mb"] >= row["rss_before_mb"] > 0
    # every tagged node and every area, and nothing untagged, read from either file, with the same columns
    assert rows["pbf"]["features"] == rows["gpkg"]["features"] == result["n_pois"]
    assert rows["pbf"]["categories"] == rows["gpkg"]["categories"]
    assert rows["pbf"]["named"] == rows["gpkg"]["named"] == len(range(0, 2000, 3)) + poi_read.N_AREAS
    assert set(result["ratio"]) == {"seconds", "peak_rss_mb"}
    assert result["ratio"]["seconds"] == round(rows["pbf"]["seconds"] / rows["gpkg"]["seconds"], 3)
    table = capsys.readouterr().out
    assert "| GeoPackage (baseline) | 2,050 |" in table and "| OpenStreetMap .osm.pbf | 2,050 |" in table


def test_data_is_cached_and_rebuilt_on_request(tmp_path: Path) -> None:
    info = poi_read.make_data(300, tmp_path)
    gpkg = gpd.read_file(info["gpkg"])
    assert len(gpkg) == 300 + poi_read.N_AREAS and set(gpkg["category"]) <= set(poi_read._categories())
    regions = gpd.read_file(info["regions"])
    assert gpkg.within(regions.union_all()).all()  # every POI inside the city, so none is dropped by a reader
    stamp = Path(info["pbf"]).stat().st_mtime_ns
    assert poi_read.make_data(300, tmp_path) == info and Path(info["pbf"]).stat().st_mtime_ns == stamp
    poi_read.make_data(300, tmp_path, rebuild=True)
    assert Path(info["pbf"]).stat().st_mtime_ns != stamp
