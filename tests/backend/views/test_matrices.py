"""Land-use shares, the mobility matrix and queen adjacency."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from backend.views import Views, adjacency_matrix, landuse_shares, mobility_matrix

X0, Y0 = 550_000.0, 4_180_000.0


@pytest.fixture
def regions(toy_regions_by_id: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    return toy_regions_by_id


@pytest.fixture
def landuse() -> gpd.GeoDataFrame:
    geoms = [
        box(X0, Y0, X0 + 200, Y0 + 50),  # park: lower half of regions 1 and 2
        box(X0 + 20, Y0, X0 + 80, Y0 + 40),  # park again, inside the first: not counted twice
        box(X0, Y0 + 75, X0 + 100, Y0 + 100),  # housing: top quarter of region 1
        box(X0 + 100, Y0, X0 + 200, Y0 + 100),  # water over all of region 2, overlapping the park
    ]
    return gpd.GeoDataFrame({"landuse_class": ["park", "park", "housing", "water"]}, geometry=geoms, crs="EPSG:32610")


def test_landuse_shares_sum_to_one_with_uncovered(regions: gpd.GeoDataFrame, landuse: gpd.GeoDataFrame) -> None:
    report: list[str] = []
    shares = landuse_shares(regions, landuse, report=report)
    assert list(shares.columns) == ["housing", "park", "water", "uncovered"]
    assert shares.index.equals(regions.index)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    np.testing.assert_allclose(shares.loc["1"], [0.25, 0.5, 0.0, 0.25])
    np.testing.assert_allclose(shares.loc["2"], [0.0, 1 / 3, 2 / 3, 0.0])  # 0.5 + 1.0 scaled down to 1
    np.testing.assert_allclose(shares.loc["3"], [0.0, 0.0, 0.0, 1.0])
    assert "1 regions; their shares were scaled" in report[0]


def test_landuse_classes_from_a_vocabulary(regions: gpd.GeoDataFrame, landuse: gpd.GeoDataFrame) -> None:
    shares = landuse_shares(regions, landuse, classes=["housing", "forest"])
    assert list(shares.columns) == ["housing", "forest", "uncovered"]
    np.testing.assert_allclose(shares.loc["1"], [0.25, 0.0, 0.75])
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)


def test_mobility_matrix_sums_duplicate_pairs() -> None:
    od = pd.DataFrame(
        {
            "origin": ["1", "1", "2", "4", "9"],
            "destination": ["2", "2", "1", "4", "1"],
            "count": [3.0, 2.0, 1.0, 7.0, 100.0],
        }
    )
    mob = mobility_matrix(od, ["1", "2", "3", "4"])
    assert mob.shape == (4, 4) and mob.dtype == np.float64
    assert mob[0, 1] == 5.0 and mob[1, 0] == 1.0 and mob[3, 3] == 7.0
    assert mob.sum() == 13.0  # the row naming region 9 is ignored
    with pytest.raises(ValueError, match="count"):
        mobility_matrix(od.drop(columns="count"), ["1"])


def test_queen_adjacency_of_a_grid(regions: gpd.GeoDataFrame) -> None:
    near = box(X0 + 200.5, Y0, X0 + 300, Y0 + 100)  # 0.5 m gap to region 2: within tolerance
    far = box(X0 + 305, Y0, X0 + 400, Y0 + 100)  # 5 m gap to the one before
    grid = pd.concat(
        [regions, gpd.GeoDataFrame(geometry=[near, far], crs=regions.crs, index=pd.Index(["5", "6"], name="region_id"))]
    )
    adj = adjacency_matrix(grid).toarray()
    expected = np.array(
        [
            [0, 1, 1, 1, 0, 0],
            [1, 0, 1, 1, 1, 0],  # region 2 touches 1, 3 (corner), 4 and 5 (0.5 m gap)
            [1, 1, 0, 1, 0, 0],
            [1, 1, 1, 0, 1, 0],  # region 4 touches 5 at a corner across the 0.5 m gap
            [0, 1, 0, 1, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ]
    )
    np.testing.assert_array_equal(adj, expected)


def test_sf_adjacency_is_symmetric_and_plausible(sf_views: Views) -> None:
    adj = sf_views.adjacency
    assert adj is not None and adj.shape == (579, 579)
    assert (adj != adj.T).nnz == 0 and adj.diagonal().sum() == 0
    assert set(np.unique(adj.data)) == {1.0}
    degree = np.asarray(adj.sum(axis=1)).ravel()
    assert 5.0 <= degree.mean() <= 7.0 and degree.min() >= 1
