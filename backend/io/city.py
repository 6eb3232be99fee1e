"""The city: every input layer read, checked and reprojected to one metric CRS.

`read_city` is the single entry point: it reads the regions, then every configured input kind through its
entry in :data:`INPUT_READERS` (the readers themselves live in the sibling modules), then the labels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import pandas as pd
from pyproj import CRS

from backend.config import LandUseSource, OdSource, PoiSource, RasterSource, RunConfig
from backend.progress import Progress

__all__ = ["INPUT_READERS", "CityData", "read_city"]


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


def _read_pois(source: PoiSource, city: CityData, progress: Progress) -> None:
    from backend.io.vectors import read_pois

    city.pois = progress.wait(lambda: read_pois(source, city.regions, city.crs, city.report), "reading POIs", 0.0)
    progress.update(1.0, f"{len(city.pois):,} POIs")


def _read_rasters(sources: list[RasterSource], city: CityData, progress: Progress) -> None:
    from backend.io.rasters import check_raster

    names: set[str] = set()
    for i, raster in enumerate(sources):
        checked = check_raster(raster, city.regions, city.crs, city.report, progress)
        name, n = checked.name or "raster", 2
        while name in names:
            name, n = f"{checked.name}_{n}", n + 1
        names.add(name)
        city.rasters.append(dataclasses.replace(checked, name=name))
        progress.update((i + 1) / len(sources), f"raster {name} checked")


def _read_od(source: OdSource, city: CityData, progress: Progress) -> None:
    from backend.io.tables import read_od

    city.od = progress.wait(lambda: read_od(source, city.regions.index, city.report), "reading the OD table", 0.0)
    progress.update(1.0, f"{len(city.od):,} OD flows")


def _read_landuse(source: LandUseSource, city: CityData, progress: Progress) -> None:
    from backend.io.vectors import read_landuse

    city.landuse = progress.wait(lambda: read_landuse(source, city.regions, city.crs, city.report),
                                 "reading land use", 0.0)
    progress.update(1.0, f"{len(city.landuse):,} land-use polygons")


#: Input kind (a section of the run configuration and the CityData field of the same name) -> its reader:
#: ``reader(source, city, progress)`` reads, checks and reprojects the configured source into the city.
#: The regions are read first (they fix the metric CRS) and the labels last, outside this registry.
INPUT_READERS: dict[str, Callable[[Any, CityData, Progress], None]] = {
    "pois": _read_pois,
    "rasters": _read_rasters,
    "od": _read_od,
    "landuse": _read_landuse,
}


def read_city(config: RunConfig, progress: Progress | None = None,
              check_regions: Callable[[int], None] | None = None) -> CityData:
    """Read, check and reproject every input of a run.

    Order: regions (which fix the metric CRS), each configured input kind of :data:`INPUT_READERS` in its
    order (POIs, rasters, OD table, land use), labels. Progress is reported (and cancellation checked)
    between the steps.

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
    from backend.io.vectors import read_regions

    progress = progress or Progress()
    report: list[str] = []
    # each layer is read under Progress.wait: a layer of millions of features takes minutes in one call, and
    # progress (a heartbeat) and cancel keep working meanwhile
    regions, crs = progress.wait(lambda: read_regions(config.regions, report), "reading regions", 0.0)
    if check_regions is not None:
        check_regions(len(regions))
    city = CityData(crs=crs, regions=regions, report=report)
    progress.update(0.15, f"{len(regions):,} regions")
    kinds = [kind for kind in INPUT_READERS if getattr(config, kind)]
    for i, kind in enumerate(kinds):
        lo, hi = 0.15 + 0.7 * i / len(kinds), 0.15 + 0.7 * (i + 1) / len(kinds)
        INPUT_READERS[kind](getattr(config, kind), city, progress.sub("read inputs", lo, hi))
    if config.labels:
        from backend.io.labels import read_labels

        city.labels = progress.wait(lambda: read_labels(config.labels, regions, crs, report), "reading labels", 0.85)
    progress.update(1.0, "inputs read")
    return city
