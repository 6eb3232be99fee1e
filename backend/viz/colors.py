"""Cluster colours of the figures: the one palette the QGIS layer styling uses too.

The palette lives in ``regionlens_common`` (the dependency-free module both sides import), so cluster
``i`` has the same colour on the map and in every PNG, whatever the number of clusters.
"""

from __future__ import annotations

from regionlens_common import CLUSTER_COLOURS, cluster_colour, cluster_colours

__all__ = ["CLUSTER_COLOURS", "cluster_colour", "cluster_colours"]
