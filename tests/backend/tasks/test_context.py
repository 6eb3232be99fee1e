"""Tests of backend.tasks.context: rings and distance bands by hand, validation, save/load, sparse only."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from backend.config import config_from_dict
from backend.errors import ConfigError, InputError
from backend.tasks.context import SpatialContext, load_context, parse_context


def _row(n: int) -> gpd.GeoSeries:
    """``n`` 100 m squares in a row (EPSG:32610): square i touches i - 1 and i + 1."""
    return gpd.GeoSeries([box(i * 100, 0, i * 100 + 100, 100) for i in range(n)], crs="EPSG:32610")


def _frame(values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(values, index=pd.Index([f"r{i}" for i in range(len(values))], name="region_id"))


def test_rings_are_exact_graph_distances_and_means_by_hand() -> None:
    x = np.arange(5, dtype=float)[:, None] * 10  # 0, 10, 20, 30, 40
    out = SpatialContext({"rings": 2}).fit_transform(_frame(x), _row(5)).to_numpy()
    assert out.shape == (5, 3)
    np.testing.assert_allclose(out[:, 0], x[:, 0])
    np.testing.assert_allclose(out[:, 1], [10, 10, 20, 30, 30])  # ring 1: touching squares
    np.testing.assert_allclose(out[:, 2], [20, 30, 20, 10, 20])  # ring 2: exactly two steps away


def test_distance_bands_exclude_self_and_fall_back_to_own_value() -> None:
    x = np.array([[1.0], [2.0], [4.0], [100.0]])
    geoms = gpd.GeoSeries([box(0, 0, 10, 10), box(100, 0, 110, 10), box(250, 0, 260, 10), box(5000, 0, 5010, 10)],
                          crs="EPSG:32610")
    out = SpatialContext({"distances_m": [120, 300]}).fit_transform(_frame(x), geoms).to_numpy()
    np.testing.assert_allclose(out[:, 1], [2.0, 1.0, 4.0, 100.0])  # within 120 m; none -> itself
    np.testing.assert_allclose(out[:, 2], [4.0, 4.0, 1.5, 100.0])  # (120, 300] m


@pytest.mark.parametrize("bad", ["huge", {"rings": -1}, {"rings": 1.5}, {"rings": 9}, {"distances_m": [1000, 500]},
                                 {"distances_m": [0]}, {"radius": 3}, 3, {"distances_m": ["far"]}])
def test_invalid_context_is_a_clear_config_error(bad: object, sf_config_dict: dict, sf_dir: Path) -> None:
    with pytest.raises(ConfigError, match="context"):
        parse_context(bad)
    sf_config_dict["context"] = bad
    with pytest.raises(ConfigError, match="context"):
        config_from_dict(sf_config_dict, base_dir=sf_dir)


def test_presets_and_none() -> None:
    assert parse_context(None) is None and parse_context("none") is None
    spec = parse_context("standard")
    assert spec is not None and spec.rings == 1 and spec.distances_m == [1000.0]
    assert parse_context({"distances_m": 500}).distances_m == [500.0]


def test_save_load_roundtrip_and_inductive_on_other_regions(tmp_path: Path) -> None:
    stage = SpatialContext("standard").fit(_frame(np.ones((3, 2))))
    stage.save(tmp_path)
    again = load_context(tmp_path)
    assert again is not None and again.spec == stage.spec and again.input_dim == 2
    assert load_context(tmp_path / "none") is None
    other = again.transform(_frame(np.arange(8, dtype=float).reshape(4, 2)), _row(4))  # 4 new regions
    assert other.shape == (4, 6) and list(other.columns)[:2] == ["emb_000", "emb_001"]
    with pytest.raises(InputError, match="polygons"):
        again.transform(_frame(np.ones((4, 2))), _row(3))
    with pytest.raises(InputError, match="2-d"):
        again.transform(_frame(np.ones((4, 3))), _row(4))


def test_large_city_stays_sparse() -> None:
    """5,000 regions: neighbourhoods are sparse matrices (a dense N x N would be 200 MB)."""
    side = 50
    geoms = gpd.GeoSeries([box(i % side * 100, i // side * 100, i % side * 100 + 100, i // side * 100 + 100)
                           for i in range(side * 100)], crs="EPSG:32610")
    hoods = SpatialContext({"rings": 2, "distances_m": [250]}).neighbourhoods(geoms, len(geoms))
    assert all(h.nnz < 30 * len(geoms) for h in hoods)
    assert int(hoods[0][0].sum()) == 3  # a corner cell has 3 queen neighbours


def test_sparse_neighbourhoods_equal_the_dense_definition() -> None:
    """k-d tree bands and sparse ring expansion give exactly the N x N dense answer (distances, graph hops)."""
    from scipy.sparse.csgraph import shortest_path
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(3)
    side = 12
    jitter = rng.uniform(-20, 20, size=(side * side, 2))
    geoms = gpd.GeoSeries([box(i % side * 100 + dx, i // side * 100 + dy, i % side * 100 + 100 + dx,
                               i // side * 100 + 100 + dy) for i, (dx, dy) in enumerate(jitter)], crs="EPSG:32610")
    stage = SpatialContext({"rings": 3, "distances_m": [150.0, 320.0]}, tolerance_m=45.0)
    hoods = stage.neighbourhoods(geoms, len(geoms))
    cent = np.column_stack([geoms.centroid.x, geoms.centroid.y])
    dense = cdist(cent, cent)
    np.fill_diagonal(dense, np.inf)
    np.testing.assert_array_equal(hoods[3].toarray() > 0, dense <= 150.0)
    np.testing.assert_array_equal(hoods[4].toarray() > 0, (dense > 150.0) & (dense <= 320.0))
    adjacency = (hoods[0].toarray() > 0).astype(float)
    hops = shortest_path(adjacency, unweighted=True)
    for ring in (1, 2, 3):
        np.testing.assert_array_equal(hoods[ring - 1].toarray() > 0, hops == ring)
    x = rng.normal(size=(len(geoms), 2))
    out = stage.fit_transform(_frame(x), geoms).to_numpy()
    in_band = dense <= 150.0
    expected = np.where(in_band.any(axis=1)[:, None], (in_band @ x) / np.maximum(in_band.sum(axis=1), 1)[:, None], x)
    np.testing.assert_allclose(out[:, 8:10], expected)  # the first band's means (after x and 3 ring blocks)
