"""Input readers: every layer, raster and table of a run, checked and reprojected to one metric CRS.

`read_city` reads a whole :class:`~backend.config.RunConfig` into a :class:`CityData`; the single
readers are exported for callers that need one input (the plugin's layer checks, tests).
"""

from backend.io.city import CityData, read_city
from backend.io.crs import choose_metric_crs
from backend.io.labels import read_labels
from backend.io.rasters import check_raster, raster_name
from backend.io.tables import read_od
from backend.io.vectors import read_label_points, read_landuse, read_pois, read_regions

__all__ = [
    "CityData",
    "read_city",
    "choose_metric_crs",
    "read_regions",
    "read_pois",
    "read_landuse",
    "read_label_points",
    "check_raster",
    "raster_name",
    "read_od",
    "read_labels",
]
