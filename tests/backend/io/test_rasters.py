"""Raster checks: file, CRS, bands, overlap with the regions, coverage and valid pixels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest

from backend.config import RasterSource
from backend.errors import InputError
from backend.io.city import CityData
from backend.io.rasters import check_raster, raster_name

X0, Y0 = 550_000.0, 4_180_000.0


@pytest.fixture
def regions(toy_regions_by_id: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    return toy_regions_by_id


def _half_raster(write_tif: Callable[..., Path], nodata_region_3: bool = True) -> Path:
    """10 m pixels over x0..x0+150, y0..y0+200: regions 1 and 3 covered, 2 and 4 half; region 3 nodata."""
    data = np.full((1, 20, 15), 100, dtype=np.uint8)
    if nodata_region_3:
        data[:, :10, :10] = 0
    return write_tif("half.tif", data, X0, Y0 + 200, 10.0, nodata=0)


def test_sf_raster_is_checked_and_resolved(sf_city: CityData) -> None:
    (raster,) = sf_city.rasters
    assert raster.name == "sf_landsat7_3857_30m" and raster.bands == [1, 2, 3]
    assert not any("Raster" in line for line in sf_city.report)  # every block group fully covered, valid pixels


def test_raster_missing_some_regions_is_counted(regions: gpd.GeoDataFrame, write_tif: Callable[..., Path]) -> None:
    report: list[str] = []
    out = check_raster(RasterSource(str(_half_raster(write_tif)), name="img 1"), regions, regions.crs, report)
    assert out.name == "img_1" and out.bands == [1]
    assert report == [
        f"Raster 'img_1': 2 of 4 regions are not fully covered by the image ([rasters] raster {out.path}).",
        "Raster 'img_1': 1 of 4 regions have no valid pixels (nodata or outside the image).",
    ]


def test_raster_missing_every_region(regions: gpd.GeoDataFrame, write_tif: Callable[..., Path]) -> None:
    path = write_tif("far.tif", np.ones((1, 10, 10), np.uint8), X0 + 5000, Y0 + 5000, 10.0)
    with pytest.raises(InputError, match=r"\[rasters\] raster .*far\.tif does not overlap any region.*wrong CRS"):
        check_raster(RasterSource(str(path)), regions, regions.crs, [])


def test_raster_with_only_nodata_under_the_regions(regions: gpd.GeoDataFrame, write_tif: Callable[..., Path]) -> None:
    path = write_tif("zeros.tif", np.zeros((1, 20, 20), np.uint8), X0, Y0 + 200, 10.0, nodata=0)
    with pytest.raises(InputError, match=r"holds only nodata \(or masked\) pixels inside the regions"):
        check_raster(RasterSource(str(path)), regions, regions.crs, [])


def test_raster_file_crs_and_band_errors(
    regions: gpd.GeoDataFrame, write_tif: Callable[..., Path], tmp_path: Path
) -> None:
    with pytest.raises(InputError, match=r"\[rasters\] raster .*missing\.tif: file not found"):
        check_raster(RasterSource(str(tmp_path / "missing.tif")), regions, regions.crs, [])
    (tmp_path / "text.tif").write_text("not a tiff")
    with pytest.raises(InputError, match=r"text\.tif: cannot be opened as a raster"):
        check_raster(RasterSource(str(tmp_path / "text.tif")), regions, regions.crs, [])
    nocrs = write_tif("nocrs.tif", np.ones((1, 20, 20), np.uint8), X0, Y0 + 200, 10.0, crs=None)
    with pytest.raises(InputError, match=r"nocrs\.tif has no coordinate reference system .*Layer Properties"):
        check_raster(RasterSource(str(nocrs)), regions, regions.crs, [])
    with pytest.raises(InputError, match=r"bands \[4\] do not exist; the raster has bands 1 to 1"):
        check_raster(RasterSource(str(_half_raster(write_tif)), bands=[4]), regions, regions.crs, [])


def test_raster_in_another_crs_is_handled(regions: gpd.GeoDataFrame, write_tif: Callable[..., Path]) -> None:
    # The same 10 m grid placed in Web Mercator around the toy regions.
    x, y = regions.to_crs("EPSG:3857").total_bounds[[0, 3]]
    path = write_tif("merc.tif", np.full((3, 40, 40), 9, np.uint8), x - 50, y + 50, 10.0, crs="EPSG:3857")
    report: list[str] = []
    out = check_raster(RasterSource(str(path)), regions, regions.crs, report)
    assert out.bands == [1, 2, 3] and report == []


def test_raster_name() -> None:
    assert raster_name(RasterSource("/x/Sentinel-2 (2020).tif")) == "Sentinel_2_2020"
    assert raster_name(RasterSource("/x/a.tif", name="rgb")) == "rgb"


def test_sf_region_pixels_match_the_documented_counts(sf_city: CityData) -> None:
    # README of the sample city: 219,812 pixels inside block groups, 797 of them nodata.
    from backend.io.rasters import open_raster, region_pixels

    with open_raster(sf_city.rasters[0]) as ds:
        pixels = list(region_pixels(ds, sf_city.regions.geometry.to_crs(ds.crs), [1, 2, 3], read_data=False))
    inside = sum(int(p.inside.sum()) for p in pixels)
    valid = sum(int(p.valid.sum()) for p in pixels)
    assert (inside, inside - valid) == (219_812, 797)
    assert min(int(p.valid.sum()) for p in pixels) > 0


def test_raster_check_polls_progress_for_every_region(regions: gpd.GeoDataFrame,
                                                       write_tif: Callable[..., Path], poll_log: Any) -> None:
    from backend.errors import Cancelled
    from backend.progress import Progress

    src = RasterSource(str(_half_raster(write_tif)))
    check_raster(src, regions, regions.crs, [], poll_log)
    assert len(poll_log.polls) == len(regions)  # one heartbeat/cancel check per region looked at
    stop = Progress()
    stop.cancel()
    with pytest.raises(Cancelled):
        check_raster(src, regions, regions.crs, [], stop)


def test_a_raster_without_nodata_reads_pixels_only_for_regions_it_does_not_cover(
        regions: gpd.GeoDataFrame, write_tif: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pixel of a raster without nodata or mask is valid: fully covered regions need no pixel read; the
    report is the one the per-region check gives."""
    from backend.io import rasters as rasters_mod

    looked: list[int] = []
    real = rasters_mod.region_pixels

    def counting(ds: object, geoms: gpd.GeoSeries, *args: object, **kwargs: object) -> object:
        looked.append(len(geoms))
        return real(ds, geoms, *args, **kwargs)

    monkeypatch.setattr(rasters_mod, "region_pixels", counting)
    report: list[str] = []
    clean = write_tif("clean.tif", np.full((1, 20, 15), 100, dtype=np.uint8), X0, Y0 + 200, 10.0)  # no nodata
    check_raster(RasterSource(str(clean)), regions, regions.crs, report)
    assert looked == [2]  # regions 2 and 4, half outside the image; 1 and 3 are fully covered
    assert report == [f"Raster 'clean': 2 of 4 regions are not fully covered by the image ([rasters] raster {clean})."]

    looked.clear()
    report.clear()
    import rasterio

    with rasterio.open(clean, "r+") as ds:  # the same image with a nodata value: every region is looked at
        ds.nodata = 0
    check_raster(RasterSource(str(clean)), regions, regions.crs, report)
    assert looked == [4]
    assert report == [f"Raster 'clean': 2 of 4 regions are not fully covered by the image ([rasters] raster {clean})."]
