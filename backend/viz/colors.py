"""Cluster colours shared by the figures and the QGIS layer styling.

Matplotlib's qualitative ``tab10`` palette for up to 10 clusters and ``tab20`` beyond, as plain hex
strings so the plugin can copy the same lists without importing matplotlib. Cluster ``i`` gets
``cluster_colors(k)[i]``.
"""

from __future__ import annotations

__all__ = ["CLUSTER_COLORS", "CLUSTER_COLORS_MANY", "cluster_colors"]

#: matplotlib ``tab10``: colours of clusters 0..9 when there are at most 10 clusters.
CLUSTER_COLORS: list[str] = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]

#: matplotlib ``tab20``: used instead when there are more than 10 clusters.
CLUSTER_COLORS_MANY: list[str] = [
    "#1f77b4",
    "#aec7e8",
    "#ff7f0e",
    "#ffbb78",
    "#2ca02c",
    "#98df8a",
    "#d62728",
    "#ff9896",
    "#9467bd",
    "#c5b0d5",
    "#8c564b",
    "#c49c94",
    "#e377c2",
    "#f7b6d2",
    "#7f7f7f",
    "#c7c7c7",
    "#bcbd22",
    "#dbdb8d",
    "#17becf",
    "#9edae5",
]


def cluster_colors(k: int) -> list[str]:
    """Hex colours of clusters ``0..k-1``.

    ``tab10`` for ``k <= 10``, ``tab20`` for larger ``k`` (repeated cyclically past 20 clusters).

    Args:
        k: Number of clusters.

    Returns:
        ``k`` hex colour strings.

    Raises:
        ValueError: If ``k`` is negative.
    """
    if k < 0:
        raise ValueError(f"k must be non-negative, got {k}.")
    palette = CLUSTER_COLORS if k <= len(CLUSTER_COLORS) else CLUSTER_COLORS_MANY
    return [palette[i % len(palette)] for i in range(k)]
