"""Imagery views: per-region band statistics and per-region image chips.

Statistics use the raster's own pixels under each region polygon (no resampling): mean, standard
deviation and the 10th/50th/90th percentiles of every band over the valid pixels, plus the valid
fraction. Chips cut each region's bounding square out of the image, resampled bilinearly to a fixed
size (as the image encoders of ReFound and CooKIE take fixed-size tiles), with pixels outside the
polygon or on nodata set to zero and flagged in a mask.
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd

from backend.config import RasterSource
from backend.io.rasters import band_indexes, open_raster, pixel_bounds, raster_name, region_pixels
from backend.progress import Progress

__all__ = ["image_stats", "image_chips", "STATS"]

#: Statistics per band, in column order.
STATS = ("mean", "std", "p10", "p50", "p90")

#: Largest side (pixels) of the decimated read used to estimate robust scaling ranges.
_SCALE_SAMPLE = 1024


def _update(progress: Progress | None, i: int, n: int, message: str) -> None:
    if progress is not None and (i % 50 == 0 or i == n):
        progress.update(i / max(n, 1), message)


def image_stats(
    regions: gpd.GeoDataFrame,
    raster: RasterSource,
    report: list[str] | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Band statistics of the valid pixels under each region.

    The polygon is reprojected to the raster's CRS and rasterised on its grid (pixel centres inside;
    every touched pixel for regions smaller than a pixel). Nodata and masked pixels are left out.
    Regions without a valid pixel get the column median of the other regions (0 if none has one).

    Args:
        regions: Region polygons with a CRS, indexed by ``region_id``.
        raster: The raster; ``name`` and ``bands`` default to :func:`~backend.io.rasters.raster_name`
            and the first three bands.
        report: Receives a line counting the regions whose statistics were imputed.
        progress: Progress of this step (cancellation is checked every 50 regions).

    Returns:
        Index ``region_id``; columns ``<raster>_b<band>_<stat>`` for ``stat`` in :data:`STATS`, then
        ``<raster>_valid_frac`` (valid pixels / pixels in the polygon).

    Raises:
        InputError: If the raster cannot be opened, has no CRS or lacks a requested band.
        Cancelled: If the run is cancelled.
    """
    name = raster_name(raster)
    with open_raster(raster) as ds:
        bands = band_indexes(raster, ds)
        geoms = regions.geometry.to_crs(ds.crs)
        n = len(regions)
        values = np.full((n, len(bands), len(STATS)), np.nan)
        valid_frac = np.zeros(n)
        is_float = np.issubdtype(np.dtype(ds.dtypes[bands[0] - 1]), np.floating)
        for i, px in enumerate(region_pixels(ds, geoms, bands)):
            _update(progress, i, n, f"image statistics ({name})")
            assert px.data is not None
            valid = px.valid
            if is_float:
                valid = valid & np.isfinite(px.data).all(axis=0)
            n_inside = int(px.inside.sum())
            n_valid = int(valid.sum())
            valid_frac[i] = n_valid / n_inside if n_inside else 0.0
            if not n_valid:
                continue
            pix = px.data[:, valid].astype(np.float64)  # B x n_valid
            values[i, :, 0] = pix.mean(axis=1)
            values[i, :, 1] = pix.std(axis=1)
            values[i, :, 2:] = np.percentile(pix, [10, 50, 90], axis=1).T
    _update(progress, n, n, f"image statistics ({name})")
    columns = [f"{name}_b{b}_{stat}" for b in bands for stat in STATS]
    table = pd.DataFrame(values.reshape(n, -1), index=pd.Index(regions.index, name="region_id"), columns=columns)
    missing = table.isna().all(axis=1)
    if missing.any():
        table = table.fillna(table.median()).fillna(0.0)
        if report is not None:
            report.append(
                f"Raster '{name}': the image statistics of {int(missing.sum()):,} regions without valid "
                "pixels were filled with the median of the other regions."
            )
    table[f"{name}_valid_frac"] = valid_frac
    return table


def _scaling(ds: object, bands: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-band ``(low, high)`` mapped to 0 and 1: the dtype range for 8-bit data, else the 2nd and 98th
    percentiles of the valid pixels of a decimated read of the whole raster."""
    from rasterio.enums import Resampling

    dtype = np.dtype(ds.dtypes[bands[0] - 1])  # type: ignore[attr-defined]
    if dtype == np.uint8:
        return np.zeros(len(bands)), np.full(len(bands), 255.0)
    h, w = ds.height, ds.width  # type: ignore[attr-defined]
    f = max(1.0, max(h, w) / _SCALE_SAMPLE)
    shape = (len(bands), max(1, round(h / f)), max(1, round(w / f)))
    data = ds.read(bands, out_shape=shape, resampling=Resampling.nearest).astype(np.float64)  # type: ignore[attr-defined]
    masks = ds.read_masks(bands, out_shape=shape, resampling=Resampling.nearest)  # type: ignore[attr-defined]
    valid = (masks > 0).any(axis=0)
    low, high = np.zeros(len(bands)), np.ones(len(bands))
    for b in range(len(bands)):
        vals = data[b][valid & np.isfinite(data[b])]
        if vals.size:
            low[b], high[b] = np.percentile(vals, [2, 98])
            if high[b] <= low[b]:
                high[b] = low[b] + 1.0
    return low, high


def _square_bounds(bounds: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = bounds
    half = max(x1 - x0, y1 - y0) / 2.0
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    return cx - half, cy - half, cx + half, cy + half


def image_chips(
    regions: gpd.GeoDataFrame,
    raster: RasterSource,
    size: int,
    progress: Progress | None = None,
    square: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """One image chip per region: the region's bounding box resampled to ``size`` x ``size``.

    Each chip covers the region's bounding box in the raster's CRS (widened to a square around its
    centre when ``square``, so the image is not stretched), read with bilinear resampling from one
    open dataset. Values are scaled to [0, 1] (8-bit: by 255; other types: the 2nd-98th percentile
    range of the raster per band, clipped). Pixels outside the polygon, outside the raster or nodata
    are 0 and False in the mask.

    Args:
        regions: Region polygons with a CRS, indexed by ``region_id``.
        raster: The raster (``bands`` default to the first three).
        size: Side of the chips in pixels.
        progress: Progress of this step (cancellation is checked every 50 regions).
        square: Widen each bounding box to a square (keeps the aspect of the image).

    Returns:
        ``(chips, masks)``: float32 N x B x S x S in [0, 1] and bool N x S x S (True = valid pixel
        inside the region).

    Raises:
        ValueError: If ``size`` is smaller than 1.
        InputError: If the raster cannot be opened, has no CRS or lacks a requested band.
        Cancelled: If the run is cancelled.
    """
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.features import geometry_mask
    from rasterio.windows import Window

    if size < 1:
        raise ValueError(f"Chip size must be at least 1 pixel, got {size}.")
    name = raster_name(raster)
    n, s = len(regions), int(size)
    with open_raster(raster) as ds:
        bands = band_indexes(raster, ds)
        nb = len(bands)
        chips = np.zeros((n, nb, s, s), dtype=np.float32)
        masks = np.zeros((n, s, s), dtype=bool)
        low, high = _scaling(ds, bands)
        scale = (1.0 / (high - low)).astype(np.float32)[:, None, None]
        offset = low.astype(np.float32)[:, None, None]
        geoms = regions.geometry.to_crs(ds.crs).to_numpy(dtype=object)
        is_float = np.issubdtype(np.dtype(ds.dtypes[bands[0] - 1]), np.floating)
        for i, geom in enumerate(geoms):
            _update(progress, i, n, f"image chips ({name})")
            if geom is None or geom.is_empty:
                continue
            bounds = _square_bounds(geom.bounds) if square else geom.bounds
            c0, r0, c1, r1 = pixel_bounds(bounds, ds.transform)
            if c1 - c0 <= 0 or r1 - r0 <= 0:
                continue
            dc, dr = (c1 - c0) / s, (r1 - r0) / s  # source pixels per chip pixel
            # Chip pixels lying wholly inside the raster (edge pixels that straddle its border stay empty).
            j0, j1 = max(0, math.ceil(-c0 / dc - 1e-9)), min(s, math.floor((ds.width - c0) / dc + 1e-9))
            k0, k1 = max(0, math.ceil(-r0 / dr - 1e-9)), min(s, math.floor((ds.height - r0) / dr + 1e-9))
            if j1 <= j0 or k1 <= k0:
                continue
            col, row = max(c0 + j0 * dc, 0.0), max(r0 + k0 * dr, 0.0)
            win = Window(col, row, min((j1 - j0) * dc, ds.width - col), min((k1 - k0) * dr, ds.height - row))
            shape = (nb, k1 - k0, j1 - j0)
            data = ds.read(bands, window=win, out_shape=shape, resampling=Resampling.bilinear, out_dtype="float32")
            valid = (ds.read_masks(bands, window=win, out_shape=shape, resampling=Resampling.nearest) > 0).any(axis=0)
            if is_float:
                valid &= np.isfinite(data).all(axis=0)
            chip_transform = ds.transform @ Affine.translation(c0, r0) @ Affine.scale(dc, dr)
            inside = geometry_mask([geom], out_shape=(s, s), transform=chip_transform, invert=True)
            if not inside.any():
                inside = geometry_mask(
                    [geom], out_shape=(s, s), transform=chip_transform, invert=True, all_touched=True
                )
            mask = np.zeros((s, s), dtype=bool)
            mask[k0:k1, j0:j1] = valid
            mask &= inside
            block = np.clip((np.nan_to_num(data) - offset) * scale, 0.0, 1.0)
            chips[i, :, k0:k1, j0:j1] = block
            chips[i] *= mask
            masks[i] = mask
    _update(progress, n, n, f"image chips ({name})")
    return chips, masks
