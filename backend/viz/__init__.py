"""Figures of a run (PNG, matplotlib Agg, no pyplot state) and the cluster colours shared with QGIS.

* :mod:`backend.viz.colors`: ``CLUSTER_COLORS`` (tab10) and ``CLUSTER_COLORS_MANY`` (tab20) as hex.
* :mod:`backend.viz.figures`: embedding map, predicted vs observed, cluster profiles, training loss.
"""

from backend.viz.colors import CLUSTER_COLORS, CLUSTER_COLORS_MANY, cluster_colors
from backend.viz.figures import plot_cluster_profiles, plot_embedding_2d, plot_pred_vs_obs, plot_training_loss

__all__ = [
    "CLUSTER_COLORS",
    "CLUSTER_COLORS_MANY",
    "cluster_colors",
    "plot_embedding_2d",
    "plot_pred_vs_obs",
    "plot_cluster_profiles",
    "plot_training_loss",
]
