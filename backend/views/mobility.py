"""Mobility view: the origin-destination flow matrix between regions (as used by HAFusion and MVURE)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

__all__ = ["mobility_matrix"]


def mobility_matrix(od: pd.DataFrame, region_ids: Iterable[object]) -> np.ndarray:
    """N x N flow counts: row = origin, column = destination, in the order of ``region_ids``.

    Duplicate origin-destination pairs are summed; rows naming unknown regions are ignored.

    Args:
        od: Columns ``origin``, ``destination`` (region ids) and ``count``.
        region_ids: The regions, in matrix order.

    Returns:
        Float64 array N x N.

    Raises:
        ValueError: If a column is missing.
    """
    missing = {"origin", "destination", "count"} - set(od.columns)
    if missing:
        raise ValueError(f"The OD frame lacks the columns {sorted(missing)}.")
    ids = pd.Index([str(r) for r in region_ids])
    n = len(ids)
    rows = ids.get_indexer(od["origin"].astype(str))
    cols = ids.get_indexer(od["destination"].astype(str))
    ok = (rows >= 0) & (cols >= 0)
    out = np.zeros((n, n), dtype=np.float64)
    np.add.at(out, (rows[ok], cols[ok]), od["count"].to_numpy(dtype=np.float64)[ok])
    return out
