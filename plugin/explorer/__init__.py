"""The embedding explorer: a dock with a 2-D projection of a run's embeddings, linked to the map.

- :mod:`.projection`: PCA (numpy), t-SNE and UMAP where installed;
- :mod:`.data`: reads embeddings, clusters and colour values from QGIS layers, joined on ``region_id``;
- :mod:`.plot`: the matplotlib scatter with rectangle / lasso selection (no QGIS in it);
- :mod:`.widget`: the dock widget that ties layers, plot and map selection together.

Importing this package is cheap; matplotlib is imported when a plot is built, and a missing
matplotlib raises an ImportError that says what to install.
"""

from __future__ import annotations

from .data import ExplorerData, embedding_fields, find_run_layers, read_explorer_data
from .projection import PROJECTIONS, Projection, available_projections, project
from .widget import EmbeddingExplorer, open_explorer

__all__ = [
    "PROJECTIONS",
    "EmbeddingExplorer",
    "ExplorerData",
    "Projection",
    "available_projections",
    "embedding_fields",
    "find_run_layers",
    "open_explorer",
    "project",
    "read_explorer_data",
]
