"""Adjacency view: queen contiguity of the regions (shared boundary or corner), with a 1 m tolerance
so that slivers and digitising gaps between neighbouring polygons do not break the graph."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import scipy.sparse as sp

__all__ = ["adjacency_matrix"]


def adjacency_matrix(regions: gpd.GeoDataFrame, tolerance: float = 1.0) -> sp.csr_matrix:
    """Regions whose polygons touch, overlap or come within ``tolerance`` of each other.

    Args:
        regions: Region polygons in a metric CRS, in matrix order.
        tolerance: Largest gap (CRS units, metres) still counted as a shared boundary.

    Returns:
        N x N symmetric 0/1 float matrix (CSR) with a zero diagonal.
    """
    geoms = regions.geometry.to_numpy()
    n = len(geoms)
    left, right = regions.sindex.query(geoms, predicate="dwithin", distance=float(tolerance))
    keep = left != right
    left, right = left[keep], right[keep]
    data = np.ones(2 * len(left))
    mat = sp.coo_matrix((data, (np.r_[left, right], np.r_[right, left])), shape=(n, n)).tocsr()
    mat.data[:] = 1.0  # duplicates summed by the conversion
    mat.eliminate_zeros()
    return mat
