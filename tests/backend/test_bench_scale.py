"""bench/scale.py: the synthetic city is a valid tessellation with POIs inside their regions; exponents fit."""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from bench import scale


def test_growth_exponent_recovers_the_power() -> None:
    sizes = [10_000, 50_000, 250_000]
    assert scale.growth_exponent(sizes, [2.0 * (n / 1e4) for n in sizes]) == pytest.approx(1.0)
    assert scale.growth_exponent(sizes, [0.5 * (n / 1e4) ** 2 for n in sizes]) == pytest.approx(2.0)
    assert scale.growth_exponent(sizes, [3.0, None, 75.0]) == pytest.approx(1.0)  # a size that failed is skipped
    assert scale.growth_exponent(sizes, [3.0, None, None]) is None


def test_synthetic_city(tmp_path: Path) -> None:
    info = scale.make_city(30, tmp_path / "city", pois_per_region=20, cell_m=200)
    regions = gpd.read_file(info["regions"])
    pois = gpd.read_file(info["pois"])
    assert len(regions) == 30 and regions["region"].is_unique and regions.is_valid.all()
    assert info["n_pois"] == len(pois) > 30 * 5
    assert set(pois["category"]) <= set(scale.CATEGORIES)
    # a tessellation: cells never overlap, and neighbours share their edges (queen adjacency on a 6 x 5 grid)
    assert regions.union_all().area == pytest.approx(regions.area.sum(), rel=1e-9)
    touching = gpd.sjoin(regions, regions, predicate="touches")
    assert len(touching) == 2 * (5 * 5 + 6 * 4 + 2 * 5 * 4)  # rook + diagonal pairs of a 6 x 5 grid, both ways
    # every POI lies inside some region
    inside = gpd.sjoin(pois, regions, predicate="within")
    assert len(inside) == len(pois)
    with rasterio.open(info["raster"]) as ds:
        assert ds.count == 3 and ds.crs.to_epsg() == 32610
        left, bottom, right, top = ds.bounds
        x0, y0, x1, y1 = regions.total_bounds
        assert left <= x0 and bottom <= y0 and right >= x1 and top >= y1
    again = scale.make_city(30, tmp_path / "city")  # reused, not rebuilt
    assert again == info
    assert math.isclose(float(np.mean(regions.area)), 200 * 200, rel_tol=0.1)


def test_a_stopped_run_records_the_stage_it_was_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The partial record holds the finished stages and the one in progress (how far the run got), and the
    table marks that stage and leaves it out of the fitted exponents."""
    import json

    monkeypatch.setattr(scale, "PARTIAL_EVERY_S", 0.0)
    partial = tmp_path / "run.stages.json"
    meter = scale._StageMeter(partial)
    meter.start("read")
    meter.report(0.05, "reading POIs")
    meter.start("predict")
    meter.report(0.62, "ridge, shuffled folds: repeat 1/1, fold 3/5")
    rows = json.loads(partial.read_text())
    assert "unfinished" not in rows["read"] and rows["read"]["cpu_s"] >= 0
    assert rows["predict"]["unfinished"] and rows["predict"]["run_fraction"] == 0.62
    assert rows["predict"]["last_message"] == "ridge, shuffled folds: repeat 1/1, fold 3/5"
    done = {"method": "cookie", "n_regions": 10_000, "stages": {"predict": {**rows["predict"], "unfinished": False}},
            "total_s": 5.0, "total_cpu_s": 4.0, "peak_rss_mb": 100.0}
    stopped = {"method": "cookie", "n_regions": 50_000, "error": "stopped after 900 s", "stages": rows}
    scale.print_table([done, stopped])
    out = capsys.readouterr().out
    predict_line = next(line for line in out.splitlines() if line.startswith("cookie") and "predict" in line)
    assert f">{rows['predict']['seconds']:.1f}" in predict_line
    assert "stopped in stage 'predict'" in out and "run at 62.0 %" in out


def test_the_longest_gaps_are_recorded_with_the_messages_around_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a stage went quiet: its longest progress gaps with the message before and after each."""
    clock = iter([0.0, 0.0, 0.5, 3.0, 3.2, 4.7, 9.7, 12.0])
    monkeypatch.setattr(scale.time, "perf_counter", lambda: next(clock))
    cpu = iter([10.0, 10.0, 10.4, 12.9, 13.0, 14.4, 14.6, 16.9, 17.0])  # the 5 s gap: waiting for a core, 0.2 s of CPU
    monkeypatch.setattr(scale, "_cpu_seconds", lambda: next(cpu))
    meter = scale._StageMeter()
    meter.start("views")  # 0.0 (start and its first report time)
    meter.report(0.1, "a")  # 0.5
    meter.report(0.2, "b")  # 3.0: 2.5 s after "a"
    meter.report(0.3, "c")  # 3.2
    meter.report(0.4, "d")  # 4.7: 1.5 s
    meter.report(0.5, "e")  # 9.7: 5.0 s
    meter.close()  # 12.0: 2.3 s to the end of the stage
    row = meter.rows["views"]
    assert row["max_gap_s"] == 5.0
    assert [(g["s"], g["after"], g["before"]) for g in row["gaps"]] == [
        (5.0, "d", "e"), (2.5, "a", "b"), (2.3, "e", "(end of stage)")]
    assert [g["cpu_s"] for g in row["gaps"]] == pytest.approx([0.2, 2.5, 2.3])


def test_rows_are_merged_into_the_json_as_it_is_when_written(tmp_path: Path) -> None:
    """Two invocations on one JSON side by side: each run's row replaces only its own (method, size)."""
    import json

    path = tmp_path / "scale.json"
    scale._merge_into(path, {"method": "baseline", "n_regions": 10, "total_s": 1.0})
    scale._merge_into(path, {"method": "cookie", "n_regions": 10, "total_s": 2.0})  # another invocation's row
    scale._merge_into(path, {"method": "baseline", "n_regions": 10, "total_s": 3.0})
    rows = json.loads(path.read_text())
    assert sorted((r["method"], r["total_s"]) for r in rows) == [("baseline", 3.0), ("cookie", 2.0)]
    assert [p.name for p in tmp_path.iterdir()] == ["scale.json"]
