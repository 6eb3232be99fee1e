"""Imagery views: band statistics over valid pixels and masked image chips."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Polygon, box

from backend.config import RasterSource
from backend.io.city import CityData
from backend.views import Views, image_chips, image_stats

X0, Y0 = 550_000.0, 4_180_000.0
NAME = "sf_landsat7_3857_30m"


@pytest.fixture
def regions(toy_regions: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The toy grid plus region 5, far outside the raster."""
    out = pd.concat(
        [
            toy_regions,
            toy_regions.iloc[[0]].set_geometry([box(X0 + 900, Y0, X0 + 1000, Y0 + 100)], crs=toy_regions.crs),
        ],
        ignore_index=True,
    )
    out.index = pd.Index(["1", "2", "3", "4", "5"], dtype="str", name="region_id")
    return out


@pytest.fixture
def raster(write_tif: Callable[..., Path]) -> RasterSource:
    """10 m pixels over x0..x0+150, y0..y0+200 (regions 2 and 4 half outside), nodata 0.

    Region 1: left half nodata, right half 50. Region 2 (inside part): 200. Region 3: all nodata.
    Region 4 (inside part): 150. Band 2 = band 1 + 1 where valid.
    """
    band = np.zeros((20, 15), np.uint8)
    band[10:, 5:10] = 50
    band[10:, 10:] = 200
    band[:10, 10:] = 150
    data = np.stack([band, np.where(band > 0, band + 1, 0).astype(np.uint8)])
    return RasterSource(str(write_tif("toy.tif", data, X0, Y0 + 200, 10.0, nodata=0)), name="toy")


def test_stats_respect_nodata_and_impute_regions_without_pixels(
    regions: gpd.GeoDataFrame, raster: RasterSource
) -> None:
    report: list[str] = []
    stats = image_stats(regions, raster, report)
    assert stats.index.equals(regions.index)
    assert list(stats.columns[:5]) == ["toy_b1_mean", "toy_b1_std", "toy_b1_p10", "toy_b1_p50", "toy_b1_p90"]
    assert stats.shape == (5, 2 * 5 + 1) and stats.columns[-1] == "toy_valid_frac"
    assert stats["toy_b1_mean"].tolist() == [50.0, 200.0, 150.0, 150.0, 150.0]  # 3 and 5 imputed: median
    assert stats["toy_b2_p90"].tolist()[:2] == [51.0, 201.0]
    assert stats["toy_b1_std"].tolist()[:2] == [0.0, 0.0]
    assert stats["toy_valid_frac"].tolist() == [0.5, 0.5, 0.0, 0.5, 0.0]
    assert report == [
        "Raster 'toy': the image statistics of 2 regions without valid pixels were filled with the "
        "median of the other regions."
    ]


def test_region_smaller_than_a_pixel_gets_a_value(raster: RasterSource) -> None:
    # A 2 m square in the corner of a 10 m pixel: no pixel centre inside it.
    tiny = gpd.GeoDataFrame(
        geometry=[box(X0 + 61, Y0 + 1, X0 + 63, Y0 + 3)], crs="EPSG:32610", index=pd.Index(["t"], name="region_id")
    )
    stats = image_stats(tiny, raster)
    assert stats.loc["t", "toy_b1_mean"] == 50.0 and stats.loc["t", "toy_valid_frac"] == 1.0


def test_sf_stats(sf_city: CityData, sf_views: Views) -> None:
    stats = sf_views.tables["image_stats"]
    assert stats.shape == (579, 16) and stats.index.equals(sf_city.regions.index)
    assert not stats.isna().any().any()
    assert (stats[f"{NAME}_valid_frac"] > 0).all() and stats[f"{NAME}_valid_frac"].mean() > 0.99
    means = stats[[f"{NAME}_b{b}_mean" for b in (1, 2, 3)]]
    assert ((means > 0) & (means < 255)).all().all()
    assert (stats[f"{NAME}_b1_p10"] <= stats[f"{NAME}_b1_p50"]).all()
    assert (stats[f"{NAME}_b1_p50"] <= stats[f"{NAME}_b1_p90"]).all()


def test_chips_mask_nodata_and_pixels_outside_the_raster(regions: gpd.GeoDataFrame, raster: RasterSource) -> None:
    chips, masks = image_chips(regions, raster, size=10)
    assert chips.shape == (5, 2, 10, 10) and chips.dtype == np.float32
    assert masks.shape == (5, 10, 10) and masks.dtype == bool
    # Region 1 maps 1:1 onto the raster: nodata left half, 50 on the right half.
    assert not masks[0, :, :5].any() and masks[0, :, 5:].all()
    np.testing.assert_allclose(chips[0, 0, :, 5:], 50 / 255, rtol=1e-6)
    np.testing.assert_allclose(chips[0, 1, :, 5:], 51 / 255, rtol=1e-6)
    # Region 2: left half on the raster (200), right half outside it.
    assert masks[1, :, :5].all() and not masks[1, :, 5:].any()
    np.testing.assert_allclose(chips[1, 0, :, :5], 200 / 255, rtol=1e-6)
    # Region 3: all nodata; region 5: outside the raster.
    for i in (2, 4):
        assert not masks[i].any() and not chips[i].any()
    assert (chips[np.broadcast_to(~masks[:, None], chips.shape)] == 0).all()


def test_chip_is_zero_outside_the_polygon(raster: RasterSource) -> None:
    triangle = Polygon([(X0 + 50, Y0), (X0 + 150, Y0), (X0 + 150, Y0 + 100)])  # valid pixels everywhere under it
    gdf = gpd.GeoDataFrame(geometry=[triangle], crs="EPSG:32610", index=pd.Index(["t"], name="region_id"))
    chips, masks = image_chips(gdf, raster, size=20)
    lower_right = np.fromfunction(lambda r, c: c > (19 - r), (20, 20))
    assert masks[0].sum() > 100
    assert not (masks[0] & ~lower_right).any()  # nothing above the diagonal
    assert (chips[0][:, ~masks[0]] == 0).all() and (chips[0][:, masks[0]] > 0).all()


def test_non_8bit_rasters_are_scaled_robustly(regions: gpd.GeoDataFrame, write_tif: Callable[..., Path]) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(1000, 3000, size=(1, 20, 20)).astype(np.uint16)
    path = write_tif("u16.tif", data, X0, Y0 + 200, 10.0)
    chips, masks = image_chips(regions.iloc[:4], RasterSource(str(path)), size=10)  # 1:1 with the pixels
    valid = chips[:, 0][masks]
    assert valid.min() == 0.0 and valid.max() == 1.0 and 0.3 < valid.mean() < 0.7


def test_sf_chips(sf_city: CityData, sf_views: Views) -> None:
    chips, masks = sf_views.chips[NAME], sf_views.chip_masks[NAME]
    assert chips.shape == (579, 3, 64, 64) and masks.shape == (579, 64, 64)
    assert masks.reshape(579, -1).any(axis=1).all()  # every block group has valid pixels
    assert (chips[np.broadcast_to(~masks[:, None], chips.shape)] == 0).all()
    assert chips.min() >= 0.0 and chips.max() <= 1.0
    # The chips show what the statistics measure.
    chip_mean = (chips[:, 0] * masks).sum(axis=(1, 2)) / masks.sum(axis=(1, 2)) * 255
    stats_mean = sf_views.tables["image_stats"][f"{NAME}_b1_mean"].to_numpy()
    assert np.corrcoef(chip_mean, stats_mean)[0, 1] > 0.95


def test_sf_chips_are_fast(sf_city: CityData) -> None:
    t0 = time.perf_counter()
    image_chips(sf_city.regions, sf_city.rasters[0], size=64)
    assert time.perf_counter() - t0 < 10.0  # about 0.5 s on a laptop core
