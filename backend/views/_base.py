"""Views: per-region feature matrices built from the inputs, rows aligned with the regions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["Views", "TABLE_VIEWS"]

#: Names of the numeric table views (N x k frames) a method can ask for.
TABLE_VIEWS = ("poi_counts", "image_stats", "landuse", "embedding")


@dataclass
class Views:
    """Everything an embedder can learn from, aligned on ``region_ids``.

    Attributes:
        region_ids: Index named ``region_id`` (same order as ``CityData.regions``).
        tables: Numeric views as DataFrames indexed by ``region_id``: ``poi_counts`` (N x C category
            counts, columns are category names), ``image_stats`` (N x k per-band statistics of valid
            pixels, columns ``<raster>_b<band>_<stat>``), ``landuse`` (N x K area shares, columns are
            classes), ``embedding`` (N x B per-region mean of every band of the satellite-embedding rasters,
            L2-normalised per raster, columns ``<raster>_b<band>_mean`` [and ``_std``]; see
            :mod:`backend.views.embedding`). Only views whose sources exist are present.
        mobility: N x N flow counts (origin rows, destination columns), or None.
        adjacency: N x N sparse 0/1 matrix of regions sharing a boundary (queen contiguity), or None.
        poi_texts: One list of POI description strings per region (empty list if none), or None.
        poi_points: One row per POI: ``x``, ``y`` (metric), ``region_id``, ``category``, ``text``, ``name``,
            or None.
        chips: Raster name -> float32 array N x B x S x S scaled to [0, 1], zero outside the region
            polygon and on nodata; built only when a method needs chips.
        chip_masks: Raster name -> bool array N x S x S, True where the chip pixel is valid.
        areas_km2: Region areas in km2 (Series indexed by ``region_id``).
        centroids: N x 2 array of region centroid coordinates in the metric CRS.
        geometry: The region polygons (a GeoSeries indexed by ``region_id`` whose ``crs`` is the metric
            CRS of ``centroids`` and ``poi_points``), or None; methods that embed locations (CaLLiPer)
            sample points inside them and reproject with their CRS.
        samples: Extra unlabeled samples for pre-training: the views of a grid of square cells over the
            regions' extent (see :mod:`backend.views.samples`), or None; built only when a method asks
            for ``"samples"``.
    """

    region_ids: pd.Index
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    mobility: np.ndarray | None = None
    adjacency: sp.csr_matrix | None = None
    poi_texts: list[list[str]] | None = None
    poi_points: pd.DataFrame | None = None
    chips: dict[str, np.ndarray] = field(default_factory=dict)
    chip_masks: dict[str, np.ndarray] = field(default_factory=dict)
    areas_km2: pd.Series | None = None
    centroids: np.ndarray | None = None
    geometry: Any = None  # geopandas.GeoSeries
    samples: Views | None = None

    def __len__(self) -> int:
        return len(self.region_ids)

    def available(self) -> set[str]:
        """Names of the present views: table names, mobility, adjacency, poi_texts, poi_points, chips, samples."""
        names = set(self.tables)
        if self.mobility is not None:
            names.add("mobility")
        if self.adjacency is not None:
            names.add("adjacency")
        if self.poi_texts is not None:
            names.add("poi_texts")
        if self.poi_points is not None:
            names.add("poi_points")
        if self.chips:
            names.add("chips")
        if self.samples is not None:
            names.add("samples")
        return names
