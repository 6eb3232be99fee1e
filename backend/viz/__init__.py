"""Figures of a run (PNG, matplotlib Agg, no pyplot state) and the cluster colours shared with QGIS.

* :mod:`backend.viz.colors`: the cluster palette (from ``regionlens_common``, shared with the plugin).
* :mod:`backend.viz.figures`: embedding map, predicted vs observed, cluster profiles, training loss.
"""

from backend.viz.colors import CLUSTER_COLOURS, cluster_colour, cluster_colours
from backend.viz.figures import plot_cluster_profiles, plot_embedding_2d, plot_pred_vs_obs, plot_training_loss

__all__ = [
    "CLUSTER_COLOURS",
    "cluster_colour",
    "cluster_colours",
    "plot_embedding_2d",
    "plot_pred_vs_obs",
    "plot_cluster_profiles",
    "plot_training_loss",
]
