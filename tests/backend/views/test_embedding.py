"""Satellite-embedding rasters: per-region statistics of a synthetic multi-band COG (written with rasterio), the
AlphaEarth int8 decoding, another CRS, the 32-band suggestion and the bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from backend.config import RasterSource, config_from_dict
from backend.errors import ConfigError, InputError
from backend.io.city import read_city
from backend.io.rasters import alphaearth_values
from backend.views import build_views
from backend.views.embedding import embedding_table
from tests.backend.conftest import TOY_X0, TOY_Y0

RES = 10.0  # metres per pixel: each 100 m toy region holds 10 x 10 pixel centres


def write_cog(path: Path, data: np.ndarray, crs: str = "EPSG:32610", nodata: float | None = None,
              transform: Affine | None = None) -> Path:
    """Write ``data`` (B x H x W) as a Cloud-Optimised GeoTIFF over the toy grid (top-left at the grid's
    top-left corner unless ``transform``)."""
    from rasterio.shutil import copy as rio_copy

    transform = transform or Affine.translation(TOY_X0, TOY_Y0 + 200) @ Affine.scale(RES, -RES)
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "crs": crs, "transform": transform}
    tmp = path.with_suffix(".plain.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        if nodata is not None:
            dst.nodata = nodata
    rio_copy(tmp, path, driver="COG")
    tmp.unlink()
    return path


def _region_pixels(data: np.ndarray, rid: int) -> np.ndarray:
    """B x 100 pixels of toy region ``rid`` (1..4; 1 2 bottom row, 3 4 top row) of a 20 x 20 raster."""
    row = 10 if rid in (1, 2) else 0  # raster rows run from the top
    col = 0 if rid in (1, 3) else 10
    return data[:, row:row + 10, col:col + 10].reshape(data.shape[0], -1).astype(np.float64)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@pytest.fixture
def regions(toy_regions):
    return toy_regions.set_index(toy_regions["rid"].astype(str).rename("region_id"))


def test_mean_of_every_band_normalised_per_region(tmp_path, regions) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(64, 20, 20)).astype("float32")
    path = write_cog(tmp_path / "aef.tif", data)
    with rasterio.open(path) as ds:
        assert ds.count == 64 and ds.profile.get("tiled")
    table = embedding_table(regions, RasterSource(str(path), name="aef", kind="embedding"))
    assert list(table.columns) == [f"aef_b{b}_mean" for b in range(1, 65)]
    for rid in "1234":
        np.testing.assert_allclose(table.loc[rid].to_numpy(), _unit(_region_pixels(data, int(rid)).mean(axis=1)),
                                   rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(table.to_numpy(), axis=1), 1.0)

    with_std = embedding_table(regions, RasterSource(str(path), name="aef", kind="embedding", std=True))
    assert with_std.shape == (4, 128) and list(with_std.columns[64:66]) == ["aef_b1_std", "aef_b2_std"]
    np.testing.assert_allclose(with_std.loc["3"].to_numpy()[64:], _region_pixels(data, 3).std(axis=1), rtol=1e-5)


def test_nodata_pixels_left_out_and_empty_regions_filled(tmp_path, regions) -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(size=(40, 20, 20)).astype("float32")
    data[:, 10:15, 0:10] = -9999.0  # half of region 1 is nodata in every band
    data[:, 0:10, 10:20] = -9999.0  # region 4 has no valid pixel
    report: list[str] = []
    table = embedding_table(regions, RasterSource(str(write_cog(tmp_path / "e.tif", data, nodata=-9999.0)),
                                                  name="e", kind="embedding"), report)
    valid_half = data[:, 15:20, 0:10].reshape(40, -1).astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(table.loc["1"].to_numpy(), _unit(valid_half), rtol=1e-6)
    others = np.vstack([valid_half] + [_region_pixels(data, r).mean(axis=1) for r in (2, 3)])
    np.testing.assert_allclose(table.loc["4"].to_numpy(), _unit(others.mean(axis=0)), rtol=1e-6)
    assert any("1 regions have no valid embedding pixel" in line for line in report)


def test_alphaearth_int8_is_dequantised(tmp_path, regions) -> None:
    decoded, valid = alphaearth_values(np.array([-128, -127, -64, 0, 64, 127], dtype=np.int8))
    np.testing.assert_allclose(decoded[1:], [-(127 / 127.5) ** 2, -(64 / 127.5) ** 2, 0.0, (64 / 127.5) ** 2,
                                             (127 / 127.5) ** 2])
    assert valid.tolist() == [False, True, True, True, True, True]

    rng = np.random.default_rng(2)
    raw = rng.integers(-127, 128, size=(64, 20, 20)).astype(np.int8)
    raw[:, 0, 0] = -128  # one missing pixel in region 3 (AlphaEarth's nodata code)
    path = write_cog(tmp_path / "aef_int8.tif", raw, nodata=-128)
    table = embedding_table(regions, RasterSource(str(path), name="aef", kind="embedding"))
    values = np.sign(raw.astype(float)) * (raw.astype(float) / 127.5) ** 2
    region3 = values[:, 0:10, 0:10].reshape(64, -1)[:, 1:]
    np.testing.assert_allclose(table.loc["3"].to_numpy(), _unit(region3.mean(axis=1)), rtol=1e-6)
    np.testing.assert_allclose(table.loc["2"].to_numpy(), _unit(_region_pixels(values, 2).mean(axis=1)), rtol=1e-6)
    raw_table = embedding_table(regions, RasterSource(str(path), name="aef", kind="embedding", dequantize="none"))
    assert not np.allclose(raw_table.to_numpy(), table.to_numpy())


def test_raster_in_another_crs_is_read_through_the_regions(tmp_path, regions) -> None:
    """The same embedding warped to EPSG:4326 gives the same region vectors (regions go to the raster's CRS)."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    vectors = np.random.default_rng(3).normal(size=(4, 48))
    data = np.zeros((48, 20, 20), dtype="float32")
    for rid in range(1, 5):
        row, col = (10 if rid in (1, 2) else 0), (0 if rid in (1, 3) else 10)
        data[:, row:row + 10, col:col + 10] = vectors[rid - 1][:, None, None]
    src_t = Affine.translation(TOY_X0, TOY_Y0 + 200) @ Affine.scale(RES, -RES)
    dst_t, w, h = calculate_default_transform("EPSG:32610", "EPSG:4326", 20, 20, TOY_X0, TOY_Y0, TOY_X0 + 200,
                                              TOY_Y0 + 200, resolution=RES / 111_000 / 3)
    warped = np.zeros((48, h, w), dtype="float32")
    reproject(data, warped, src_transform=src_t, src_crs="EPSG:32610", dst_transform=dst_t, dst_crs="EPSG:4326",
              resampling=Resampling.nearest)
    path = write_cog(tmp_path / "wgs84.tif", warped, crs="EPSG:4326", transform=dst_t)
    table = embedding_table(regions, RasterSource(str(path), name="e", kind="embedding"))
    for rid in range(1, 5):
        assert float(table.loc[str(rid)].to_numpy() @ _unit(vectors[rid - 1])) > 0.99


def _city_config(tmp_path: Path, write_gpkg, toy_regions, raster: dict) -> dict:
    write_gpkg(toy_regions, "regions.gpkg")
    return {"output_dir": str(tmp_path / "out"), "regions": {"path": "regions.gpkg", "id_field": "rid"},
            "rasters": [raster], "methods": [{"name": "pretrained"}]}


def test_views_of_an_embedding_raster(tmp_path, write_gpkg, toy_regions) -> None:
    data = np.random.default_rng(4).normal(size=(64, 20, 20)).astype("float32")
    write_cog(tmp_path / "aef.tif", data)
    cfg = _city_config(tmp_path, write_gpkg, toy_regions, {"path": "aef.tif", "kind": "embedding"})
    city = read_city(config_from_dict(cfg, base_dir=tmp_path))
    views = build_views(city, needs={"chips"}, report=[])
    assert "image_stats" not in views.tables and not views.chips  # no imagery statistics or chips of it
    assert views.tables["embedding"].shape == (4, 64)


def test_many_bands_suggest_the_embedding_kind(tmp_path, write_gpkg, toy_regions) -> None:
    write_cog(tmp_path / "tessera.tif", np.ones((32, 20, 20), dtype="float32"))
    cfg = _city_config(tmp_path, write_gpkg, toy_regions, {"path": "tessera.tif"})
    cfg["methods"] = [{"name": "baseline"}]
    city = read_city(config_from_dict(cfg, base_dir=tmp_path))
    assert any("has 32 bands" in line and 'kind = "embedding"' in line for line in city.report)
    write_cog(tmp_path / "rgb.tif", np.ones((31, 20, 20), dtype="float32"))
    cfg["rasters"] = [{"path": "rgb.tif"}]
    assert not any("bands:" in line for line in read_city(config_from_dict(cfg, base_dir=tmp_path)).report)


def test_bands_disagreeing_in_nodata_are_refused_and_nothing_written(tmp_path, write_gpkg, toy_regions) -> None:
    from backend.cli import main

    # A GeoTIFF holds one nodata value for all bands; a VRT over it can give each band its own (as mosaics do).
    write_cog(tmp_path / "tile.tif", np.ones((34, 20, 20), dtype="float32"))
    bands = "".join(
        f'<VRTRasterBand dataType="Float32" band="{b}"><NoDataValue>{0.0 if b < 34 else -1.0}</NoDataValue>'
        f'<SimpleSource><SourceFilename relativeToVRT="1">tile.tif</SourceFilename><SourceBand>{b}</SourceBand>'
        "</SimpleSource></VRTRasterBand>" for b in range(1, 35))
    with rasterio.open(tmp_path / "tile.tif") as ds:
        srs, gt = ds.crs.to_wkt(), ", ".join(str(v) for v in ds.transform.to_gdal())
    (tmp_path / "mixed.vrt").write_text(f'<VRTDataset rasterXSize="20" rasterYSize="20"><SRS>{srs}</SRS>'
                                        f"<GeoTransform>{gt}</GeoTransform>{bands}</VRTDataset>")
    cfg = _city_config(tmp_path, write_gpkg, toy_regions, {"path": "mixed.vrt", "kind": "embedding"})
    with pytest.raises(InputError, match=r"mixed\.vrt.*disagree in their nodata value.*band 1: 0\.0.*one nodata "
                                         r"value for all bands"):
        read_city(config_from_dict(cfg, base_dir=tmp_path))
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    assert main(["run", str(tmp_path / "c.json"), "--quiet"]) == 2
    assert not (tmp_path / "out").exists()


def test_embedding_settings_are_checked(tmp_path, write_gpkg, toy_regions) -> None:
    write_cog(tmp_path / "rgb.tif", np.ones((3, 20, 20), dtype="uint8"))
    cfg = _city_config(tmp_path, write_gpkg, toy_regions, {"path": "rgb.tif", "kind": "pretrained"})
    with pytest.raises(ConfigError, match=r"rasters\[0\]\.kind' must be one of \['imagery', 'embedding'\]"):
        config_from_dict(cfg, base_dir=tmp_path)
    cfg["rasters"] = [{"path": "rgb.tif", "std": True}]
    with pytest.raises(ConfigError, match="apply to embedding rasters only"):
        config_from_dict(cfg, base_dir=tmp_path)
    cfg["rasters"] = [{"path": "rgb.tif"}]  # imagery only: pretrained has nothing to use
    with pytest.raises(ConfigError, match="pretrained"):
        config_from_dict(cfg, base_dir=tmp_path)
    cfg["rasters"] = [{"path": "rgb.tif", "kind": "embedding", "dequantize": "alphaearth"}]
    with pytest.raises(InputError, match=r"decodes int8 values, but the raster is uint8"):
        read_city(config_from_dict(cfg, base_dir=tmp_path))
