"""The city: every input layer read, checked and reprojected to one metric CRS.

`read_city` is the single entry point; the readers it calls live in the sibling modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import geopandas as gpd
import pandas as pd
from pyproj import CRS

from backend.config import RasterSource

__all__ = ["CityData"]


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
