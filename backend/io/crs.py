"""The one projected metric CRS a run works in.

Distances (adjacency tolerance, spatial lags) and areas (densities, land-use shares) need a CRS in
metres whose scale is close to true. The region layer's own CRS is kept when it is projected and in
metres; a CRS in feet, a geographic CRS (degrees) and the Mercator family (EPSG:3857 inflates areas by
1 / cos^2(latitude), about 1.6 in San Francisco) are replaced by the local UTM zone.
"""

from __future__ import annotations

import geopandas as gpd
from pyproj import CRS

from backend.errors import InputError

__all__ = ["choose_metric_crs", "crs_label"]


def crs_label(crs: CRS) -> str:
    """A short human name for ``crs``: ``"EPSG:32610 (WGS 84 / UTM zone 10N)"`` or just its name."""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg} ({crs.name})" if epsg else crs.name


def _is_mercator(crs: CRS) -> bool:
    """True for (pseudo-)Mercator projections, whose scale grows with latitude; False for Transverse Mercator."""
    op = crs.coordinate_operation
    method = (op.method_name if op is not None else "").lower()
    return "mercator" in method and "transverse" not in method


def choose_metric_crs(gdf: gpd.GeoDataFrame, layer: str = "the regions layer", report: list[str] | None = None) -> CRS:
    """Choose the projected metric CRS a run works in.

    The layer's own CRS if it is projected with metre units (and not Mercator); otherwise the local
    UTM zone estimated from the layer's extent. When the layer's CRS is replaced, a line saying so is
    appended to ``report``.

    Args:
        gdf: The layer (normally the regions) whose CRS and extent decide.
        layer: How to name the layer in messages, e.g. ``"[regions] /data/blocks.gpkg"``.
        report: Notes for the user; receives a line when the layer's own CRS is not used.

    Returns:
        The CRS to reproject every input to.

    Raises:
        InputError: If the layer has no CRS, or its extent is empty so no UTM zone can be estimated.
    """
    crs = gdf.crs
    if crs is None:
        raise InputError(
            f"{layer} has no coordinate reference system (CRS). Assign one in QGIS "
            "(Layer Properties > Source > Assigned Coordinate Reference System) and export the layer again."
        )
    crs = CRS.from_user_input(crs)
    reason = ""
    if crs.is_projected:
        unit = crs.axis_info[0].unit_name if crs.axis_info else "unknown unit"
        factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 0.0
        if abs(factor - 1.0) > 1e-9:
            reason = f"is in {unit}, not metres"
        elif _is_mercator(crs):
            reason = "is a Mercator projection that distorts areas and distances away from the equator"
        else:
            return crs
    try:
        utm = gdf.estimate_utm_crs()
    except (RuntimeError, ValueError) as exc:
        raise InputError(
            f"{layer}: cannot find a local UTM zone for this layer ({exc}). Check that the features have "
            "geometries and that the layer's CRS is right."
        ) from exc
    if reason:
        if report is not None:
            report.append(f"The CRS of {layer}, {crs_label(crs)}, {reason}; working in {crs_label(utm)} instead.")
    elif report is not None:
        report.append(f"{layer} is in geographic coordinates, {crs_label(crs)}; working in {crs_label(utm)}.")
    return utm
