"""The city: every input layer read, checked and reprojected to one metric CRS.

`read_city` is the single entry point; the readers it calls live in the sibling modules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import geopandas as gpd
import pandas as pd
from pyproj import CRS

from backend.config import RasterSource, RunConfig
from backend.progress import Progress

__all__ = ["CityData", "read_city"]


@dataclass
class CityData:
    """All inputs of a run, aligned on regions and in one projected metric CRS.

    Attributes:
        crs: The metric CRS everything is in (the region layer's own if projected, else local UTM).
        regions: Region polygons, index named ``region_id`` (the user's id values as strings), in input
            order, with every attribute field of the layer kept as a column.
        pois: POIs inside some region, index named ``feature_id``; columns ``category`` (str),
            ``name`` (str or None), ``region_id``, geometry (points). ``None`` without a POI layer.
        rasters: Raster sources that exist, open and overlap the regions.
        od: Flows with columns ``origin``, ``destination`` (region ids) and ``count``; ``None`` without one.
        landuse: Land-use polygons with a ``landuse_class`` column; ``None`` without a land-use layer.
        labels: Raw label values, index ``region_id``, one float column per label name (NaN = missing).
        report: Human-readable notes on what was repaired, dropped or counted while reading.
    """

    crs: CRS
    regions: gpd.GeoDataFrame
    pois: gpd.GeoDataFrame | None = None
    rasters: list[RasterSource] = field(default_factory=list)
    od: pd.DataFrame | None = None
    landuse: gpd.GeoDataFrame | None = None
    labels: pd.DataFrame | None = None
    report: list[str] = field(default_factory=list)


def read_city(config: RunConfig, progress: Progress | None = None,
              check_regions: Callable[[int], None] | None = None) -> CityData:
    """Read, check and reproject every input of a run.

    Order: regions (which fix the metric CRS), POIs, rasters, OD table, land use, labels. Progress is
    reported (and cancellation checked) between the steps.

    Args:
        config: The run configuration; its paths are already absolute.
        progress: Progress of the reading stage; ``None`` reports nothing.
        check_regions: Called with the number of regions as soon as they are read, before the other
            inputs (to refuse too few regions for the run's tasks before blaming another layer).

    Returns:
        The city, with ``report`` listing what was repaired, dropped or counted.

    Raises:
        InputError: If any input cannot be used (the message names the layer or field and says what
            to do).
        ConfigError: If a label's point filter is half given.
        Cancelled: If the run is cancelled between two steps.
    """
    from backend.io.labels import read_labels
    from backend.io.rasters import check_raster
    from backend.io.tables import read_od
    from backend.io.vectors import read_landuse, read_pois, read_regions

    progress = progress or Progress()
    report: list[str] = []
    # each layer is read under Progress.wait: a layer of millions of features takes minutes in one call, and
    # progress (a heartbeat) and cancel keep working meanwhile
    regions, crs = progress.wait(lambda: read_regions(config.regions, report), "reading regions", 0.0)
    if check_regions is not None:
        check_regions(len(regions))
    city = CityData(crs=crs, regions=regions, report=report)
    progress.update(0.15, f"{len(regions):,} regions")
    if config.pois is not None:
        pois = config.pois
        city.pois = progress.wait(lambda: read_pois(pois, regions, crs, report), "reading POIs")
        progress.update(0.35, f"{len(city.pois):,} POIs")
    names: set[str] = set()
    for i, raster in enumerate(config.rasters):
        checked = check_raster(raster, regions, crs, report, progress)
        name, n = checked.name or "raster", 2
        while name in names:
            name, n = f"{checked.name}_{n}", n + 1
        names.add(name)
        city.rasters.append(dataclasses.replace(checked, name=name))
        progress.update(0.35 + 0.25 * (i + 1) / len(config.rasters), f"raster {name} checked")
    if config.od is not None:
        city.od = read_od(config.od, regions.index, report)
        progress.update(0.7, f"{len(city.od):,} OD flows")
    if config.landuse is not None:
        landuse = config.landuse
        city.landuse = progress.wait(lambda: read_landuse(landuse, regions, crs, report), "reading land use")
        progress.update(0.8, f"{len(city.landuse):,} land-use polygons")
    if config.labels:
        city.labels = progress.wait(lambda: read_labels(config.labels, regions, crs, report), "reading labels")
    progress.update(1.0, "inputs read")
    return city
