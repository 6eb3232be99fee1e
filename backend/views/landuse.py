"""Land-use view: the share of each region's area covered by each land-use class (as in HAFusion's
land-use view and the urban-function features of MVURE)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd

__all__ = ["landuse_shares", "UNCOVERED"]

#: Column holding the share of a region not covered by any (listed) class.
UNCOVERED = "uncovered"


def landuse_shares(
    regions: gpd.GeoDataFrame,
    landuse: gpd.GeoDataFrame,
    classes: list[str] | None = None,
    report: list[str] | None = None,
) -> pd.DataFrame:
    """Area share of each land-use class in each region.

    Each class is dissolved first, so overlapping polygons of one class are not counted twice. Where
    polygons of different classes overlap, a region's shares are scaled down to sum to 1.

    Args:
        regions: Region polygons in a metric CRS, indexed by ``region_id``.
        landuse: Land-use polygons in the same CRS with a ``landuse_class`` column.
        classes: Classes to report, in this column order (a saved model's vocabulary); others count as
            uncovered. Default: every class present, sorted.
        report: Receives a line counting regions whose shares were scaled down.

    Returns:
        N x (K + 1) float frame indexed by ``region_id``: one column per class and ``uncovered``
        (1 minus their sum); every row sums to 1.

    Raises:
        ValueError: If ``landuse`` lacks the ``landuse_class`` column.
    """
    if "landuse_class" not in landuse.columns:
        raise ValueError("The land-use frame needs a 'landuse_class' column.")
    names = sorted(landuse["landuse_class"].astype(str).unique()) if classes is None else [str(c) for c in classes]
    lu = landuse.loc[landuse["landuse_class"].astype(str).isin(names), ["landuse_class", "geometry"]]
    area = regions.geometry.area.to_numpy()
    shares = np.zeros((len(regions), len(names)))
    if len(lu):
        lu = lu.dissolve(by="landuse_class", as_index=False).set_crs(regions.crs, allow_override=True)
        regs = gpd.GeoDataFrame(
            {"_row": np.arange(len(regions))}, geometry=regions.geometry.to_numpy(), crs=regions.crs
        )
        parts = gpd.overlay(regs, lu, how="intersection", keep_geom_type=True)
        col = pd.Index(names).get_indexer(parts["landuse_class"].astype(str))
        np.add.at(shares, (parts["_row"].to_numpy(), col), parts.geometry.area.to_numpy())
    shares /= np.where(area > 0, area, 1.0)[:, None]
    total = shares.sum(axis=1)
    over = total > 1.0 + 1e-6
    if over.any():
        shares[over] /= total[over, None]
        if report is not None:
            report.append(
                f"Land use: overlapping classes cover more than the whole area of {int(over.sum()):,} "
                "regions; their shares were scaled to sum to 1."
            )
    shares = np.clip(shares, 0.0, 1.0)
    out = pd.DataFrame(shares, index=pd.Index(regions.index, name="region_id"), columns=pd.Index(names, dtype=object))
    out[UNCOVERED] = np.clip(1.0 - shares.sum(axis=1), 0.0, 1.0)
    return out
