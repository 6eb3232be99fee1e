"""Views: per-region feature matrices built from the inputs, rows aligned with the regions.

`build_views` turns a :class:`~backend.io.CityData` into :class:`Views`; the single view builders are
exported for methods and tests that need one.
"""

from backend.views._base import TABLE_VIEWS, Views
from backend.views.adjacency import adjacency_matrix
from backend.views.build import build_views
from backend.views.imagery import image_chips, image_stats
from backend.views.landuse import landuse_shares
from backend.views.mobility import mobility_matrix
from backend.views.poi import poi_counts, poi_points, poi_text, poi_texts
from backend.views.samples import pretraining_grid, sample_views

__all__ = [
    "TABLE_VIEWS",
    "Views",
    "build_views",
    "poi_counts",
    "poi_texts",
    "poi_points",
    "poi_text",
    "image_stats",
    "image_chips",
    "mobility_matrix",
    "landuse_shares",
    "adjacency_matrix",
    "pretraining_grid",
    "sample_views",
]
