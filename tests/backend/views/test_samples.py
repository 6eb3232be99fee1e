"""Pre-training samples: grid cells over the regions, their POIs and chips, and the wiring in build_views."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Point, box

from backend.config import config_from_dict
from backend.io.city import CityData, read_city
from backend.progress import Progress
from backend.views import build_views, poi_points, pretraining_grid, sample_views

X0, Y0 = 550_000.0, 4_180_000.0


def _square(regions: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    out = regions.copy()
    out.index = pd.Index(out["rid"].astype(str), dtype="str", name="region_id")
    return out


def _bounds(cells: gpd.GeoDataFrame, cell_id: str) -> tuple[float, ...]:
    return tuple(round(v, 6) for v in cells.geometry.loc[cell_id].bounds)


@pytest.fixture
def tiny_city(
    toy_regions: gpd.GeoDataFrame, write_gpkg: Callable[..., Path], write_tif: Callable[..., Path], tmp_path: Path
) -> CityData:
    """The toy 2 x 2 grid read by read_city, with five POIs (one outside every region) and a raster.

    Raster: 10 m pixels exactly over the 200 m square, band 1 = 50 on the west half and 200 on the east
    half, band 2 = band 1 + 1, no nodata.
    """
    pois = gpd.GeoDataFrame(
        {
            "cat": ["cafe", "school", "place_of_worship", "cafe", "cafe"],
            "label": ["Blue Bottle", "Mission High", None, "  ", "Far Away"],
        },
        geometry=[
            Point(X0 + 10, Y0 + 10),  # region 1, south-west corner
            Point(X0 + 140, Y0 + 140),  # region 4
            Point(X0 + 60, Y0 + 140),  # region 3
            Point(X0 + 190, Y0 + 40),  # region 2
            Point(X0 + 900, Y0 + 900),  # outside every region: dropped when read
        ],
        crs="EPSG:32610",
    )
    band = np.full((20, 20), 50, np.uint8)
    band[:, 10:] = 200
    data = np.stack([band, band + 1])
    cfg = config_from_dict(
        {
            "output_dir": "out",
            "regions": {"path": str(write_gpkg(toy_regions, "regions.gpkg")), "id_field": "rid"},
            "pois": {"path": str(write_gpkg(pois, "pois.gpkg")), "category_field": "cat", "name_field": "label"},
            "rasters": [{"path": str(write_tif("toy.tif", data, X0, Y0 + 200, 10.0)), "name": "toy"}],
        },
        base_dir=tmp_path,
    )
    return read_city(cfg)


def test_grid_on_a_2x2_square(toy_regions: gpd.GeoDataFrame) -> None:
    regions = _square(toy_regions)
    one = pretraining_grid(regions, offsets=1)
    assert list(one.index) == ["g0_r0_c0", "g0_r0_c1", "g0_r1_c0", "g0_r1_c1"]
    assert one.index.name == "region_id" and one.crs == regions.crs
    assert list(one.columns) == ["grid", "row", "col", "geometry"]
    # Median bounding-square side (100 m); row 0 at the north edge.
    assert _bounds(one, "g0_r0_c0") == (X0, Y0 + 100, X0 + 100, Y0 + 200)
    assert _bounds(one, "g0_r1_c1") == (X0 + 100, Y0, X0 + 200, Y0 + 100)
    np.testing.assert_allclose(one.geometry.area, 100 * 100)

    two = pretraining_grid(regions, offsets=2)
    assert len(two) == 4 + 9 and list(two.index[:4]) == list(one.index)
    assert list(two.index[4:]) == [f"g1_r{r}_c{c}" for r in range(3) for c in range(3)]
    # The second grid is shifted half a cell west and north and covers the square with 3 x 3 cells.
    assert _bounds(two, "g1_r0_c0") == (X0 - 50, Y0 + 150, X0 + 50, Y0 + 250)
    assert _bounds(two, "g1_r2_c2") == (X0 + 150, Y0 - 50, X0 + 250, Y0 + 50)
    assert (two["grid"].to_numpy() == [0] * 4 + [1] * 9).all()

    big = pretraining_grid(regions, cell_side=200.0, offsets=1)
    assert list(big.index) == ["g0_r0_c0"] and _bounds(big, "g0_r0_c0") == (X0, Y0, X0 + 200, Y0 + 200)


def test_cells_away_from_the_regions_are_dropped(toy_regions: gpd.GeoDataFrame) -> None:
    regions = _square(toy_regions)
    # Without region 4 (north-east) its cell goes; cells that only touch a region's border never count.
    three = pretraining_grid(regions.drop(index="4"), offsets=1)
    assert list(three.index) == ["g0_r0_c0", "g0_r1_c0", "g0_r1_c1"]
    # Two regions 1 km apart: the 9 empty columns of cells between them are dropped.
    far = regions.iloc[[0, 1]].copy()
    far.geometry = [box(X0, Y0, X0 + 100, Y0 + 100), box(X0 + 1000, Y0, X0 + 1100, Y0 + 100)]
    cells = pretraining_grid(far, offsets=1)
    assert list(cells.index) == ["g0_r0_c0", "g0_r0_c10"]
    cells = pretraining_grid(far, offsets=2)
    assert len(cells) == 2 + 2 * 4 and cells.geometry.intersects(far.geometry.union_all()).all()
    # A triangle: the north-east cell only touches it at a corner, the others overlap it.
    tri = regions.iloc[[0]].copy()
    tri.geometry = [box(X0, Y0, X0 + 200, Y0 + 200).difference(box(X0 + 100, Y0 + 100, X0 + 200, Y0 + 200))]
    assert list(pretraining_grid(tri, cell_side=100.0, offsets=1).index) == ["g0_r0_c0", "g0_r1_c0", "g0_r1_c1"]


def test_max_cells_takes_a_seeded_subset(toy_regions: gpd.GeoDataFrame) -> None:
    regions = _square(toy_regions)
    full = pretraining_grid(regions, cell_side=10.0, offsets=2)
    assert len(full) == 20 * 20 + 21 * 21
    sub = pretraining_grid(regions, cell_side=10.0, offsets=2, max_cells=50, seed=3)
    assert len(sub) == 50 and sub.index.isin(full.index).all()
    assert list(sub.index) == [i for i in full.index if i in set(sub.index)]  # in grid order
    assert sub.index.equals(pretraining_grid(regions, cell_side=10.0, offsets=2, max_cells=50, seed=3).index)
    assert not sub.index.equals(pretraining_grid(regions, cell_side=10.0, offsets=2, max_cells=50, seed=4).index)
    assert len(pretraining_grid(regions, cell_side=10.0, offsets=2, max_cells=10_000)) == len(full)


@pytest.mark.parametrize("kwargs", [{"offsets": 0}, {"max_cells": 0}, {"cell_side": -1.0}, {"cell_side": float("nan")}])
def test_bad_parameters(toy_regions: gpd.GeoDataFrame, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        pretraining_grid(_square(toy_regions), **kwargs)


def test_sample_views_of_a_tiny_city(tiny_city: CityData) -> None:
    assert len(tiny_city.pois) == 4  # type: ignore[arg-type]  # the far POI is not in the city
    cells = pretraining_grid(tiny_city.regions, offsets=2)
    views = sample_views(tiny_city, cells, chip_size=10)
    assert views.available() == {"poi_points", "chips"} and len(views) == 13
    assert views.region_ids.equals(cells.index) and views.region_ids.name == "region_id"
    assert views.geometry is not None and views.geometry.index.equals(cells.index)
    np.testing.assert_allclose(views.areas_km2, 0.01)
    assert views.centroids is not None and views.centroids.shape == (13, 2)
    np.testing.assert_allclose(views.centroids[0], [X0 + 50, Y0 + 150])

    points, ref = views.poi_points, poi_points(tiny_city)
    assert points is not None
    assert list(points.columns) == list(ref.columns) and points.index.name == ref.index.name
    assert (points.dtypes == ref.dtypes).all()
    # Each POI lies in one cell of each grid (none on a cell border), and in no other cell.
    assert len(points) == 2 * len(ref) and (points.groupby(level=0).size() == 2).all()
    geoms = cells.geometry.loc[points["region_id"]].to_numpy()
    assert all(g.contains(Point(x, y)) for g, x, y in zip(geoms, points["x"], points["y"], strict=True))
    blue = points[points["name"] == "Blue Bottle"]
    assert list(blue["region_id"]) == ["g0_r1_c0", "g1_r2_c0"] and blue["text"].iloc[0] == "Blue Bottle, a cafe"
    assert sorted(points.loc[points["region_id"] == "g1_r1_c1", "category"]) == ["place_of_worship", "school"]
    nameless = points[points["category"] == "place_of_worship"]
    assert nameless["name"].isna().all() and nameless["text"].iloc[0] == "a place of worship"

    chips, masks = views.chips["toy"], views.chip_masks["toy"]
    assert chips.shape == (13, 2, 10, 10) and chips.dtype == np.float32 and masks.shape == (13, 10, 10)
    # g0_r0_c0 is region 3 (west half of the raster): all valid, 50.
    assert masks[0].all()
    np.testing.assert_allclose(chips[0, 0], 50 / 255, rtol=1e-6)
    np.testing.assert_allclose(chips[0, 1], 51 / 255, rtol=1e-6)
    # g1_r0_c0 reaches half a cell beyond the raster to the west and north: only its south-east quarter is valid.
    corner = masks[cells.index.get_loc("g1_r0_c0")]
    assert corner[5:, 5:].all() and corner.sum() == 25
    assert (chips[np.broadcast_to(~masks[:, None], chips.shape)] == 0).all()


def test_sample_views_without_pois_or_rasters(tiny_city: CityData) -> None:
    bare = CityData(crs=tiny_city.crs, regions=tiny_city.regions)
    cells = pretraining_grid(bare.regions, offsets=1)
    views = sample_views(bare, cells, chip_size=4)
    assert views.available() == set() and views.poi_points is None and len(views) == 4
    with pytest.raises(ValueError):
        sample_views(bare, cells, chip_size=0)


def test_build_views_builds_samples_only_when_asked(tiny_city: CityData) -> None:
    plain = build_views(tiny_city, needs={"chips"}, chip_size=8, report=[])
    assert plain.samples is None and "samples" not in plain.available()
    seen: list[float] = []
    views = build_views(
        tiny_city, needs={"samples"}, chip_size=8, progress=Progress(callback=lambda s, f, m: seen.append(f)), report=[]
    )
    assert views.available() == {"poi_counts", "poi_texts", "poi_points", "image_stats", "adjacency", "samples"}
    assert not views.chips  # the regions' chips were not asked for
    samples = views.samples
    assert samples is not None and list(samples.region_ids) == list(pretraining_grid(tiny_city.regions).index)
    assert samples.chips["toy"].shape == (13, 2, 8, 8) and samples.samples is None
    assert seen[-1] == 1.0 and seen == sorted(seen)


def test_sf_samples(sf_city: CityData) -> None:
    cells = pretraining_grid(sf_city.regions)
    assert 579 < len(cells) < 4000 and set(cells["grid"]) == {0, 1}
    views = sample_views(sf_city, cells, chip_size=16)
    points = views.poi_points
    assert points is not None and points["region_id"].isin(cells.index).all()
    # Every POI of the city lies in a cell of each of the two grids.
    assert set(points.index) == set(sf_city.pois.index)  # type: ignore[union-attr]
    assert (points.groupby(level=0).size() >= 2).all()
    masks = next(iter(views.chip_masks.values()))
    assert masks.reshape(len(cells), -1).any(axis=1).all()
