"""Readers of the vector inputs: regions, POIs, land use and label points.

Each reader checks its layer (file, features, geometry type, CRS, fields), reprojects it to the run's
metric CRS and returns a frame in the data contract of :class:`~backend.io.city.CityData`. Anything
repaired, dropped or counted on the way becomes a line in ``report``; anything that makes the layer
unusable raises :class:`~backend.errors.InputError` with a message that names the layer or field and
says what to do.
"""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
from pyproj import CRS

from backend.config import LabelSpec, LandUseSource, PoiSource, RegionsSource
from backend.errors import ConfigError, InputError
from backend.io._layers import (
    POLYGONAL,
    assign_points,
    first_ids,
    read_layer,
    repair_polygons,
    require_crs,
    require_field,
    single_points,
    str_series,
    type_summary,
    values_to_str,
    where,
)
from backend.io.crs import choose_metric_crs

__all__ = ["read_regions", "read_pois", "read_landuse", "read_label_points", "tiny_regions", "MIN_AREA_SHARE"]

#: A region whose area is below this share of the median region area is flagged, and gets no density label
#: (a sliver's density is extreme and would dominate the fit).
MIN_AREA_SHARE = 1e-3


def tiny_regions(areas: pd.Series) -> pd.Index:
    """Ids of the regions whose area is below :data:`MIN_AREA_SHARE` of the median area (or not positive)."""
    values = pd.to_numeric(areas, errors="coerce").astype(float)
    positive = values[values > 0]
    if not len(positive):
        return pd.Index([], name=areas.index.name)
    small = ~(values >= MIN_AREA_SHARE * float(positive.median()))
    return areas.index[small.to_numpy()]


def _no_area(repaired: gpd.GeoSeries, ids: pd.Index, place: str) -> None:
    """Raise if a repaired region has nothing polygonal left."""
    empty = repaired.isna().to_numpy()
    if empty.any():
        raise InputError(
            f"{place}: {int(empty.sum()):,} region geometries have no area left after repair (collinear or "
            f"degenerate polygons; ids {first_ids(ids[empty])}). Fix them in QGIS (Vector > Geometry Tools > "
            "Fix Geometries) or delete them."
        )


def read_regions(src: RegionsSource, report: list[str]) -> tuple[gpd.GeoDataFrame, CRS]:
    """Read the region polygons and choose the run's metric CRS.

    Args:
        src: Path, layer and id field of the region layer.
        report: Notes for the user; receives lines on CRS changes and repaired geometries.

    Returns:
        ``(regions, crs)``: the regions reprojected to ``crs``, indexed by ``region_id`` (the id field's
        values as strings, integers without ``.0``), in input order, with every attribute field kept as a
        column (the id field too, unless it is itself called ``region_id``); and the metric CRS.

    Raises:
        InputError: If the file is missing or unreadable, the layer is empty, not polygonal or has no
            CRS, the id field is missing, ids are null or duplicated, some features have no geometry,
            or a geometry is empty after repair.
    """
    place = where("regions", src.path, src.layer)
    gdf = read_layer(src.path, src.layer, place)
    require_field(gdf, src.id_field, place, "id field")
    geom = gdf.geometry
    types = geom[~(geom.isna() | geom.is_empty)].geom_type
    if not len(types):
        raise InputError(f"{place}: no feature has a geometry. Choose a polygon layer.")
    if not types.isin(POLYGONAL).all():
        found = type_summary(types[~types.isin(POLYGONAL)])
        what = (
            "choose a polygon layer"
            if not types.isin(POLYGONAL).any()
            else "only polygons can be regions; delete the other features or choose another layer"
        )
        raise InputError(f"{place}: regions must be polygons, found {found}: {what}.")
    ids = values_to_str(gdf[src.id_field])
    n_null = int(ids.isna().sum())
    if n_null:
        raise InputError(
            f"{place}: {n_null:,} of {len(ids):,} features have no value in the id field '{src.id_field}'. "
            "Fill them in, or choose a field with a unique value for every region."
        )
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        values = pd.unique(dup.to_numpy())
        raise InputError(
            f"{place}: the id field '{src.id_field}' is not unique: {len(values):,} values occur more than "
            f"once ({first_ids(values)}). Choose a field with a unique value for every region, or fix them."
        )
    gdf.index = pd.Index(ids.to_numpy(dtype=object), dtype="str", name="region_id")
    missing = gdf.geometry.isna() | gdf.geometry.is_empty
    if missing.any():
        raise InputError(
            f"{place}: {int(missing.sum()):,} regions have no geometry (ids {first_ids(gdf.index[missing])}). "
            "Delete them or draw their polygons."
        )
    # Validity is checked in the layer's own CRS: reprojection can turn a broken polygon (a collinear ring,
    # a bow tie) into a valid-looking sliver that would then pass unnoticed.
    invalid_ids = gdf.index[~gdf.geometry.is_valid.to_numpy()]
    repaired, n_invalid = repair_polygons(gdf.geometry)
    if n_invalid:
        _no_area(repaired, gdf.index, place)
        report.append(
            f"Repaired {n_invalid:,} invalid region geometries ({place}; ids {first_ids(invalid_ids)}); check "
            "them on the map (QGIS: Vector > Geometry Tools > Check Validity)."
        )
        gdf = gdf.set_geometry(repaired)
    crs = choose_metric_crs(gdf, place, report)
    gdf = gdf.to_crs(crs)
    repaired, n_invalid = repair_polygons(gdf.geometry)
    if n_invalid:
        _no_area(repaired, gdf.index, place)
        report.append(f"Repaired {n_invalid:,} region geometries that became invalid when reprojected ({place}).")
        gdf = gdf.set_geometry(repaired)
    small = tiny_regions(gdf.geometry.area)
    if len(small):
        report.append(
            f"{len(small):,} regions are far smaller than the others (under {MIN_AREA_SHARE:.1%} of the median "
            f"region area; ids {first_ids(small)}): they get no density label. Check them for slivers or "
            f"degenerate polygons ({place})."
        )
    if src.id_field == "region_id":
        gdf = gdf.drop(columns="region_id")
    elif "region_id" in gdf.columns:
        gdf = gdf.rename(columns={"region_id": "region_id_field"})
        report.append(
            f"{place}: the field 'region_id' is kept as 'region_id_field' (region ids come from '{src.id_field}')."
        )
    return gdf, crs


def _keep_inside(inside: pd.Series, place: str, none: str, outside: str, report: list[str], advice: str = "") -> None:
    """Fail when no feature of a layer lies in a region (a wrong CRS, or another area); report those outside.

    Raises:
        InputError: If ``inside`` holds no True: ``<place>: <none> The layer probably has a wrong CRS ...``.
    """
    if not inside.any():
        raise InputError(f"{place}: {none} The layer probably has a wrong CRS or covers another area; check both "
                         f"layers on the QGIS map{advice}.")  # fmt: skip
    if not inside.all():
        report.append(f"{int((~inside).sum()):,} of {len(inside):,} {outside} every region and were ignored ({place}).")


def read_pois(src: PoiSource, regions: gpd.GeoDataFrame, crs: CRS, report: list[str]) -> gpd.GeoDataFrame:
    """Read the POIs, reproject them and assign each to the region it lies in.

    Args:
        src: The POI source: a point layer (path, layer, category field, optional name field), an
            OpenStreetMap extract or a GeoParquet file (see :mod:`backend.io.poi_files`).
        regions: Region polygons in ``crs``, indexed by ``region_id``.
        crs: The run's metric CRS.
        report: Notes for the user: dropped POIs (no geometry, no category, outside every region),
            multi-points replaced by their centroid, regions without POIs.

    Returns:
        POIs inside some region, index ``feature_id`` (the layer's feature ids), columns ``category``
        (str), ``name`` (str or None), ``region_id`` (str) and point geometry.

    Raises:
        InputError: If the file is missing or unreadable, the layer is empty, has no CRS, holds lines or
            polygons, a field is missing, no POI has a category, or no POI falls inside a region.
    """
    place = where("pois", src.path, src.layer)
    gdf, category_field, name_field = _poi_frame(src, regions, crs, place, report)
    gdf = single_points(gdf.to_crs(crs), place, report)
    category = values_to_str(gdf[category_field])
    no_cat = category.isna()
    if no_cat.all():
        raise InputError(
            f"{place}: no POI has a value in the category field '{category_field}'. "
            "Choose the field that holds the POI categories."
        )
    if no_cat.any():
        report.append(f"{place}: {int(no_cat.sum()):,} POIs without a category ('{category_field}') were ignored.")
    gdf, category = gdf.loc[~no_cat], category[~no_cat]
    name = values_to_str(gdf[name_field]) if name_field else pd.Series(None, index=gdf.index, dtype=object)
    region = assign_points(gdf.geometry, regions)
    inside = region.notna()
    _keep_inside(inside, place, f"none of the {len(gdf):,} POIs falls inside a region.", "POIs fall outside", report,
                 ", or choose another POI layer")  # fmt: skip
    n_empty = len(regions) - region[inside].nunique()
    if n_empty:
        report.append(f"{n_empty:,} of {len(regions):,} regions hold no POI.")
    out = gpd.GeoDataFrame(
        {
            "category": str_series(category[inside].to_numpy(dtype=object)),
            "name": pd.Series(name[inside].to_numpy(dtype=object), dtype=object),
            "region_id": str_series(region[inside].to_numpy(dtype=object)),
        },
        geometry=gdf.geometry[inside].to_numpy(),
        crs=crs,
    )
    fids = pd.Index(gdf.index[inside], name="feature_id")
    out.index = fids if fids.is_unique else pd.RangeIndex(len(out), name="feature_id")
    return out


def _poi_frame(src: PoiSource, regions: gpd.GeoDataFrame, crs: CRS, place: str,
               report: list[str]) -> tuple[gpd.GeoDataFrame, str, str | None]:
    """The POI features of any POI source, with the names of their category and name columns.

    A point layer is read as it is; an OpenStreetMap extract and a GeoParquet file are read only inside the
    regions' extent (:mod:`backend.io.poi_files`).
    """
    from backend.io.poi_files import poi_file_kind, read_osm_pois, read_parquet_pois

    kind = poi_file_kind(src.path)
    bounds = tuple(float(v) for v in regions.total_bounds)
    if kind == "osm":
        from pyproj import Transformer

        box = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform_bounds(*bounds)
        return read_osm_pois(src.path, src.osm_tags, box, crs, place, report), "category", "name"
    if kind == "parquet":
        return read_parquet_pois(src.path, src.category_field, src.name_field, bounds, crs, place, report)
    if not src.category_field:
        raise ConfigError(f"{place}: give the category field (category_field) of the POI layer.")
    gdf = read_layer(src.path, src.layer, place, fid_as_index=True)
    require_field(gdf, src.category_field, place, "category field")
    if src.name_field:
        require_field(gdf, src.name_field, place, "name field")
    require_crs(gdf, place)
    return gdf, src.category_field, src.name_field


def read_landuse(src: LandUseSource, regions: gpd.GeoDataFrame, crs: CRS, report: list[str]) -> gpd.GeoDataFrame:
    """Read the land-use polygons, reproject and repair them, and keep those touching some region.

    Args:
        src: Path, layer and class field of the land-use layer.
        regions: Region polygons in ``crs``.
        crs: The run's metric CRS.
        report: Notes for the user: dropped features (no geometry, no class, away from every region)
            and repaired geometries.

    Returns:
        Land-use polygons, index ``feature_id``, columns ``landuse_class`` (str) and geometry.

    Raises:
        InputError: If the file is missing or unreadable, the layer is empty, has no CRS or is not
            polygonal, the class field is missing or empty, or no polygon overlaps a region.
    """
    place = where("landuse", src.path, src.layer)
    gdf = read_layer(src.path, src.layer, place, fid_as_index=True)
    require_field(gdf, src.class_field, place, "class field")
    require_crs(gdf, place)
    nulls = gdf.geometry.isna() | gdf.geometry.is_empty
    types = gdf.geometry[~nulls].geom_type
    if not len(types) or not types.isin(POLYGONAL).all():
        found = type_summary(types[~types.isin(POLYGONAL)]) or "no geometries"
        raise InputError(f"{place}: land use must be polygons, found {found}. Choose a polygon layer.")
    if nulls.any():
        report.append(f"{place}: {int(nulls.sum()):,} land-use features without a geometry were ignored.")
    gdf = gdf.loc[~nulls]
    classes = values_to_str(gdf[src.class_field])
    if classes.isna().all():
        raise InputError(
            f"{place}: no feature has a value in the class field '{src.class_field}'. "
            "Choose the field that holds the land-use classes."
        )
    if classes.isna().any():
        report.append(f"{place}: {int(classes.isna().sum()):,} land-use features without a class were ignored.")
    keep = classes.notna()
    gdf = gdf.loc[keep].to_crs(crs)
    repaired, n_invalid = repair_polygons(gdf.geometry)
    if n_invalid:
        report.append(f"Repaired {n_invalid:,} invalid land-use geometries ({place}).")
    out = gpd.GeoDataFrame(
        {"landuse_class": pd.Series(classes[keep].to_numpy(dtype=object), index=gdf.index, dtype="str")},
        geometry=repaired,
        crs=crs,
    )
    out = out.loc[out.geometry.notna()]
    hits = regions.sindex.query(out.geometry.to_numpy(), predicate="intersects")[0]
    touching = pd.Series(False, index=out.index)
    touching.iloc[pd.unique(hits)] = True
    _keep_inside(touching, place, "no land-use polygon overlaps a region.", "land-use polygons lie outside", report)
    out = out.loc[touching.to_numpy()]
    out.index.name = "feature_id"
    return out


def read_label_points(spec: LabelSpec, regions: gpd.GeoDataFrame, crs: CRS, report: list[str]) -> pd.Series:
    """Count the points of a label's point layer in each region.

    Args:
        spec: The label; uses ``points``, ``points_layer``, ``points_filter_field`` and
            ``points_filter_value``. With a filter only points whose field equals the value (compared
            as text) are counted.
        regions: Region polygons in ``crs``, indexed by ``region_id``.
        crs: The run's metric CRS.
        report: Notes for the user: points outside every region, dropped features.

    Returns:
        Point counts (int64) indexed by ``region_id`` in region order, 0 for regions without a point,
        named after the label.

    Raises:
        ConfigError: If the label has no point layer, or only one of filter field and filter value.
        InputError: If the file is missing or unreadable, the layer is empty, has no CRS or is not a
            point layer, the filter field is missing or matches no point, or no point falls inside a
            region.
    """
    if not spec.points:
        raise ConfigError(f"Label '{spec.name}' has no point layer ('points').")
    if (spec.points_filter_field is None) != (spec.points_filter_value is None):
        raise ConfigError(f"Label '{spec.name}': give both points_filter_field and points_filter_value, or neither.")
    place = where(f"labels '{spec.name}'", spec.points, spec.points_layer)
    gdf = read_layer(spec.points, spec.points_layer, place)
    require_crs(gdf, place)
    if spec.points_filter_field is not None:
        require_field(gdf, spec.points_filter_field, place, "filter field")
        values = values_to_str(gdf[spec.points_filter_field])
        wanted = str(spec.points_filter_value).strip()
        match = values == wanted
        if not match.any():
            common = values.value_counts().index[:10].tolist()
            raise InputError(
                f"{place}: no point has {spec.points_filter_field} = '{wanted}'. Values present include "
                f"{common}; correct points_filter_value."
            )
        gdf = gdf.loc[match.to_numpy()]
    gdf = single_points(gdf.to_crs(crs), place, report)
    region = assign_points(gdf.geometry, regions)
    inside = region.notna()
    if not inside.any():
        raise InputError(
            f"{place}: none of the {len(gdf):,} points falls inside a region. The layer probably has a wrong "
            "CRS or covers another area; check both layers on the QGIS map."
        )
    if not inside.all():
        report.append(
            f"Label '{spec.name}': {int((~inside).sum()):,} of {len(gdf):,} points fall outside every "
            f"region and were not counted ({place})."
        )
    counts = region[inside].value_counts()
    out = pd.Series(0, index=regions.index, dtype="int64", name=spec.name)
    out.loc[counts.index.astype(str)] = counts.to_numpy(dtype="int64")
    return out
