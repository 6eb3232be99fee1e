"""Satellite-embedding view: the per-region mean (and optionally standard deviation) of every band of a
pretrained embedding raster (AlphaEarth Foundations / Google Satellite Embedding, TESSERA, ...).

Each pixel of such a raster is already an embedding vector (AlphaEarth: 64 unit-length dimensions per
10 m pixel). A region's vector is the mean of its valid pixels' vectors, L2-normalised, as the AlphaEarth
documentation recommends for aggregating over an area (a mean of unit vectors is shorter than one; its
direction is what carries the meaning). A pixel counts when it lies inside the polygon (the imagery
rasterisation rule), is not nodata, is finite in every band and, for AlphaEarth int8 tiles, is not the
nodata code -128. The standard deviations, when asked for, are appended unnormalised.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd

from backend.config import RasterSource
from backend.io.rasters import (
    MAX_WINDOW_PIXELS,
    alphaearth_values,
    band_indexes,
    check_embedding_raster,
    dequantize,
    open_raster,
    raster_name,
    region_pixels,
)
from backend.progress import Progress

__all__ = ["embedding_table", "is_embedding"]


def is_embedding(raster: RasterSource) -> bool:
    """Whether ``raster`` is declared a satellite-embedding raster (``kind = "embedding"``)."""
    return raster.kind == "embedding"


def embedding_table(
    regions: gpd.GeoDataFrame,
    raster: RasterSource,
    report: list[str] | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """The embedding view of one raster: per region the L2-normalised mean of every band over valid pixels.

    Args:
        regions: Region polygons with a CRS, indexed by ``region_id`` (reprojected to the raster's CRS).
        raster: An embedding raster (``bands``: all by default; ``std``: add standard deviations;
            ``dequantize``: see :func:`backend.io.rasters.dequantize`).
        report: Receives a line counting the regions without a valid pixel.
        progress: Progress of this step (cancellation is checked every 50 regions).

    Returns:
        Index ``region_id``; columns ``<raster>_b<band>_mean`` for every band (unit length per row), then
        ``<raster>_b<band>_std`` when ``raster.std``. Regions without a valid pixel get the normalised mean
        of the other regions' vectors (zeros if none has one).

    Raises:
        InputError: If the raster cannot be opened, lacks a band, or its bands disagree in nodata or type.
        Cancelled: If the run is cancelled.
    """
    name = raster_name(raster)
    with open_raster(raster) as ds:
        bands = band_indexes(raster, ds)
        check_embedding_raster(raster, ds, bands)
        decode = dequantize(raster, ds.dtypes[bands[0] - 1])
        nodata = ds.nodatavals[bands[0] - 1]
        geoms = regions.geometry.to_crs(ds.crs)
        n, nb = len(regions), len(bands)
        means = np.full((n, nb), np.nan)
        stds = np.full((n, nb), np.nan)
        budget = max(1, MAX_WINDOW_PIXELS // nb)  # pixels per window, so a 128-band read stays small
        for i, px in enumerate(region_pixels(ds, geoms, bands, max_pixels=budget)):
            if progress is not None and i % 50 == 0:
                progress.update(i / max(n, 1), f"embedding ({name})")
            assert px.data is not None
            data = px.data
            valid = px.valid.copy()
            if nodata is not None and not np.isnan(nodata):
                valid &= (data != nodata).all(axis=0)
            if decode:
                data, ok = alphaearth_values(data)
                valid &= ok.all(axis=0)
            pix = data[:, valid].astype(np.float64)  # B x n_valid
            pix = pix[:, np.isfinite(pix).all(axis=0)]
            if not pix.shape[1]:
                continue
            means[i] = pix.mean(axis=1)
            stds[i] = pix.std(axis=1)
    if progress is not None:
        progress.update(1.0, f"embedding ({name})")
    missing = np.isnan(means).any(axis=1)
    if missing.all():
        means[:], stds[:] = 0.0, 0.0
    elif missing.any():
        means[missing] = means[~missing].mean(axis=0)
        stds[missing] = stds[~missing].mean(axis=0)
    if missing.any() and report is not None:
        report.append(f"Raster '{name}': {int(missing.sum()):,} regions have no valid embedding pixel; they get "
                      "the mean vector of the other regions.")
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    means = means / np.where(norms > 0, norms, 1.0)
    ids = pd.Index(regions.index, name="region_id")
    table = pd.DataFrame(means, index=ids, columns=[f"{name}_b{b}_mean" for b in bands])
    if raster.std:
        table = pd.concat([table, pd.DataFrame(stds, index=ids, columns=[f"{name}_b{b}_std" for b in bands])], axis=1)
    return table
