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
