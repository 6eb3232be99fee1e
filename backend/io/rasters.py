"""Satellite imagery: checking a raster against the regions, and reading the pixels under a region.

:func:`check_raster` runs when the city is read (the file opens, has a CRS and covers some region with
valid pixels). :func:`region_pixels` is the windowed reader shared with the imagery views: one open
dataset, one small window per region, the region polygon rasterised on the raster's own grid.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS

from backend.config import RasterSource
from backend.errors import InputError
from regionlens_common import EMBEDDING_MIN_BANDS

if TYPE_CHECKING:
    from affine import Affine
    from rasterio.io import DatasetReader
    from shapely.geometry.base import BaseGeometry

    from backend.progress import Progress

__all__ = [
    "check_raster", "check_embedding_raster", "dequantize", "alphaearth_values", "raster_name", "open_raster",
    "band_indexes", "region_pixels", "RegionPixels",
]

#: Windows with more pixels than this are read decimated (nearest) when computing statistics.
MAX_WINDOW_PIXELS = 16_000_000


def raster_name(src: RasterSource) -> str:
    """Short name of a raster used in feature columns: ``src.name`` or the file stem, letters/digits/_ only."""
    name = src.name or Path(src.path).stem
    name = re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_")
    return name or "raster"


def _place(src: RasterSource) -> str:
    return f"[rasters] raster {src.path}"


def open_raster(src: RasterSource) -> DatasetReader:
    """Open a raster with rasterio; the caller closes it (use as a context manager).

    Raises:
        InputError: If the file is missing or cannot be opened, or has no CRS.
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    place = _place(src)
    if not Path(src.path).exists():
        raise InputError(f"{place}: file not found. Check the path, or export the raster from QGIS again.")
    try:
        ds = rasterio.open(src.path)
    except RasterioIOError as exc:
        raise InputError(f"{place}: cannot be opened as a raster ({exc}). Use a GeoTIFF.") from exc
    if ds.crs is None:
        ds.close()
        raise InputError(
            f"{place} has no coordinate reference system (CRS) or georeferencing. Assign a CRS in QGIS "
            "(Layer Properties > Source) or georeference it (Raster > Georeferencer), then save it as GeoTIFF."
        )
    return ds


def band_indexes(src: RasterSource, ds: DatasetReader) -> list[int]:
    """The 1-based bands to use: ``src.bands``, else the first three (or all if fewer; every band of an
    embedding raster).

    Raises:
        InputError: If a requested band does not exist.
    """
    if not src.bands:
        return list(range(1, (ds.count if src.kind == "embedding" else min(3, ds.count)) + 1))
    bad = [b for b in src.bands if not 1 <= int(b) <= ds.count]
    if bad:
        raise InputError(f"{_place(src)}: bands {bad} do not exist; the raster has bands 1 to {ds.count}.")
    return [int(b) for b in src.bands]


def _footprint(ds: DatasetReader) -> BaseGeometry:
    t = ds.transform
    corners = [t @ (0, 0), t @ (ds.width, 0), t @ (ds.width, ds.height), t @ (0, ds.height)]
    return shapely.Polygon(corners)


def pixel_bounds(bounds: tuple[float, float, float, float], transform: Affine) -> tuple[float, float, float, float]:
    """Fractional pixel box ``(col_min, row_min, col_max, row_max)`` covering map ``bounds`` (any affine)."""
    inv = ~transform
    x0, y0, x1, y1 = bounds
    cols, rows = zip(*(inv @ (x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))), strict=True)
    return min(cols), min(rows), max(cols), max(rows)


@dataclasses.dataclass
class RegionPixels:
    """The pixels of one region on the raster's grid (arrays share the window's shape ``h x w``).

    Attributes:
        data: B x h x w band values (native dtype), or ``None`` when only masks were read.
        inside: Pixels inside the region polygon (including any outside the raster).
        valid: Pixels inside the polygon and the raster that are valid in at least one band (GDAL's
            dataset-mask rule: a pixel is nodata when every band is nodata or masked).
    """

    data: np.ndarray | None
    inside: np.ndarray
    valid: np.ndarray


def region_pixels(
    ds: DatasetReader, geoms: gpd.GeoSeries, indexes: list[int], read_data: bool = True,
    max_pixels: int = MAX_WINDOW_PIXELS,
) -> Iterator[RegionPixels]:
    """Yield the pixels under each region, in order.

    The polygon is rasterised on the raster's own grid (pixel centres inside; all pixels it touches
    when it is smaller than a pixel). Parts of a window outside the raster are invalid. Windows above
    :data:`MAX_WINDOW_PIXELS` are read decimated.

    Args:
        ds: Open raster.
        geoms: Region polygons in the raster's CRS.
        indexes: 1-based bands to read.
        read_data: Read band values too (``False``: masks only).
        max_pixels: Windows with more pixels than this are read decimated (nearest).

    Yields:
        One :class:`RegionPixels` per geometry.
    """
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.features import geometry_mask
    from rasterio.windows import Window


    height, width = ds.height, ds.width
    for geom in geoms.to_numpy(dtype=object):
        if geom is None or geom.is_empty:
            yield RegionPixels(
                None if not read_data else np.zeros((len(indexes), 1, 1), ds.dtypes[0]),
                np.zeros((1, 1), bool),
                np.zeros((1, 1), bool),
            )
            continue
        c0, r0, c1, r1 = pixel_bounds(geom.bounds, ds.transform)
        c0, r0 = math.floor(c0), math.floor(r0)
        c1, r1 = max(math.ceil(c1), c0 + 1), max(math.ceil(r1), r0 + 1)
        h, w = r1 - r0, c1 - c0
        step = max(1, math.ceil(math.sqrt(h * w / max_pixels)))
        oh, ow = math.ceil(h / step), math.ceil(w / step)
        transform = ds.transform @ Affine.translation(c0, r0) @ Affine.scale(w / ow, h / oh)
        inside = geometry_mask([geom], out_shape=(oh, ow), transform=transform, invert=True)
        if not inside.any():
            inside = geometry_mask([geom], out_shape=(oh, ow), transform=transform, invert=True, all_touched=True)
        valid = np.zeros((oh, ow), dtype=bool)
        data = np.zeros((len(indexes), oh, ow), dtype=ds.dtypes[indexes[0] - 1]) if read_data else None
        # The part of the window inside the raster, in window-output pixels (exact when step == 1).
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r1, height), min(c1, width)
        if rr1 > rr0 and cc1 > cc0:
            o_r0, o_c0 = (rr0 - r0) // step, (cc0 - c0) // step
            o_r1, o_c1 = min(oh, math.ceil((rr1 - r0) / step)), min(ow, math.ceil((cc1 - c0) / step))
            win = Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
            shape = (o_r1 - o_r0, o_c1 - o_c0)
            masks = ds.read_masks(indexes, window=win, out_shape=(len(indexes), *shape), resampling=Resampling.nearest)
            valid[o_r0:o_r1, o_c0:o_c1] = (masks > 0).any(axis=0)  # GDAL: nodata only if all bands are
            if data is not None:
                data[:, o_r0:o_r1, o_c0:o_c1] = ds.read(
                    indexes, window=win, out_shape=(len(indexes), *shape), resampling=Resampling.nearest
                )
        yield RegionPixels(data, inside, valid & inside)


def dequantize(src: RasterSource, dtype: np.dtype | str) -> bool:
    """Whether the values of an embedding raster of ``dtype`` are AlphaEarth-quantised int8 to decode."""
    return src.dequantize == "alphaearth" or (src.dequantize == "auto" and np.dtype(dtype) == np.int8)


def alphaearth_values(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode AlphaEarth int8 embeddings: ``((v / 127.5) ** 2) * sign(v)``, with -128 as nodata.

    The formula is the de-quantisation published for Google's int8 Cloud-Optimised GeoTIFF tiles of the
    Satellite Embedding dataset (AlphaEarth Foundations; taken from issue 16, see docs/sources.md): the signed
    square root of the float value was scaled to [-127, 127].

    Returns:
        ``(decoded, valid)``: float64 values, and False where a value is -128.
    """
    v = values.astype(np.float64)
    return np.sign(v) * (v / 127.5) ** 2, values != -128


def check_embedding_raster(src: RasterSource, ds: DatasetReader, bands: list[int]) -> None:
    """Raise if the bands of an embedding raster disagree in data type or nodata (one pixel rule for all).

    Raises:
        InputError: Naming the raster and the disagreeing bands.
    """
    place = _place(src)
    nodata = {b: ds.nodatavals[b - 1] for b in bands}
    values = {("nan" if v is not None and math.isnan(v) else v) for v in nodata.values()}
    if len(values) > 1:
        shown = ", ".join(f"band {b}: {v}" for b, v in list(nodata.items())[:6])
        raise InputError(
            f"{place}: the bands of this embedding raster disagree in their nodata value ({shown}, ...). Every "
            "band of an embedding must mark the same pixels as missing: set one nodata value for all bands "
            "(gdal_translate -a_nodata VALUE, or QGIS: Raster > Conversion > Translate)."
        )
    dtypes = {ds.dtypes[b - 1] for b in bands}
    if len(dtypes) > 1:
        raise InputError(f"{place}: the bands of this embedding raster have different data types {sorted(dtypes)}; "
                         "write every band with one type.")
    if src.dequantize == "alphaearth" and np.dtype(ds.dtypes[bands[0] - 1]) != np.int8:
        raise InputError(f"{place}: dequantize = \"alphaearth\" decodes int8 values, but the raster is "
                         f"{ds.dtypes[bands[0] - 1]}; leave dequantize out (the values are used as they are).")


def check_raster(src: RasterSource, regions: gpd.GeoDataFrame, crs: CRS, report: list[str],
                 progress: Progress | None = None) -> RasterSource:
    """Check that a raster can be used with the regions and resolve its name and bands.

    Args:
        src: The raster as configured.
        regions: Region polygons in ``crs``, indexed by ``region_id``.
        crs: The run's metric CRS (the CRS of ``regions``).
        report: Notes for the user: regions the raster does not fully cover, regions without valid pixels.
        progress: Polled (heartbeat and cancel) for every region whose pixels are looked at.

    Returns:
        A copy of ``src`` with ``name`` (:func:`raster_name`) and ``bands`` filled in.

    Raises:
        InputError: If the file is missing or unreadable, has no CRS, a requested band does not exist,
            the raster overlaps no region, or holds only nodata under the regions; for an embedding raster
            also if its bands disagree in nodata or data type (:func:`check_embedding_raster`).
    """
    place = _place(src)
    name = raster_name(src)
    with open_raster(src) as ds:
        bands = band_indexes(src, ds)
        if src.kind == "embedding":
            check_embedding_raster(src, ds, bands)
        elif ds.count >= EMBEDDING_MIN_BANDS:
            report.append(
                f"Raster '{name}' has {ds.count} bands: if it is a satellite-embedding raster (AlphaEarth, "
                f'TESSERA), declare kind = "embedding" to use every band (docs/sources.md); as imagery only '
                f"bands {bands} are used ({place})."
            )
        try:
            geoms = (regions.geometry if regions.crs is not None else regions.geometry.set_crs(crs)).to_crs(ds.crs)
        except Exception as exc:  # pyproj raises several error types
            raise InputError(
                f"{place}: cannot transform the regions to the raster's CRS ({exc}). "
                "Reproject the raster in QGIS (Raster > Projections > Warp)."
            ) from exc
        footprint = _footprint(ds)
        values = geoms.to_numpy(dtype=object)
        overlaps = shapely.intersects(values, footprint)
        if not overlaps.any():
            raise InputError(
                f"{place} does not overlap any region (raster bounds {tuple(round(b) for b in ds.bounds)} in "
                f"{ds.crs.to_string()}). The raster probably has a wrong CRS or shows another area; check both on "
                "the QGIS map, or choose another raster."
            )
        covered = shapely.within(values, footprint)
        if not covered.all():
            report.append(
                f"Raster '{name}': {int((~covered).sum()):,} of {len(regions):,} regions are not fully "
                f"covered by the image ({place})."
            )
        # A raster without nodata or mask has every pixel valid: a region it fully covers has at least one
        # (its pixel centres, or every pixel it touches), so only the regions it does not cover are looked at.
        from rasterio.enums import MaskFlags

        all_valid = all(ds.mask_flag_enums[b - 1] == [MaskFlags.all_valid] for b in bands)
        todo = np.flatnonzero(~covered) if all_valid else np.arange(len(geoms))
        n_valid = np.ones(len(geoms), dtype=np.int64)
        for i, px in zip(todo, region_pixels(ds, geoms.iloc[todo], bands, read_data=False), strict=True):
            if progress is not None:
                progress.poll()
            n_valid[i] = px.valid.sum()
    empty = n_valid == 0
    if empty.all():
        raise InputError(
            f"{place} holds only nodata (or masked) pixels inside the regions. Choose another "
            "raster, or check its nodata value in Layer Properties > Transparency."
        )
    if empty.any():
        report.append(
            f"Raster '{name}': {int(empty.sum()):,} of {len(regions):,} regions have no valid pixels "
            "(nodata or outside the image)."
        )
    return dataclasses.replace(src, name=name, bands=bands)
