"""Shared helpers of the vector readers: opening a layer, checking fields, ids and geometry types,
repairing polygons and assigning points to regions. Private to :mod:`backend.io`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from backend.errors import InputError

POLYGONAL = frozenset({"Polygon", "MultiPolygon"})
#: shapely's type ids of the point types (Point, MultiPoint).
POINT_TYPE_IDS = (int(shapely.GeometryType.POINT), int(shapely.GeometryType.MULTIPOINT))


def where(section: str, path: str | Path, layer: str | None = None) -> str:
    """How messages name a layer: ``"[pois] layer /data/pois.gpkg (layer 'pois')"``."""
    text = f"[{section}] layer {path}"
    return f"{text} (layer '{layer}')" if layer else text


def read_layer(path: str | Path, layer: str | None, place: str, fid_as_index: bool = False) -> gpd.GeoDataFrame:
    """Read a vector layer with pyogrio.

    Args:
        path: File to read.
        layer: Layer name inside a multi-layer file, or ``None`` for the first layer.
        place: The layer's name in messages (see :func:`where`).
        fid_as_index: Index the frame by the OGR feature ids (as QGIS shows them for GeoPackages).

    Returns:
        The layer with at least one feature.

    Raises:
        InputError: If the file is missing, cannot be read, lacks the named layer or has no features.
    """
    import pyogrio

    p = Path(path)
    if not p.exists():
        raise InputError(f"{place}: file not found. Check the path, or export the layer from QGIS again.")
    if layer is not None:
        try:
            names = [str(n) for n in pyogrio.list_layers(p)[:, 0]]
        except Exception as exc:  # any driver failure is a read error
            raise InputError(
                f"{place}: cannot be read as a vector layer ({exc}). Use a GeoPackage, GeoJSON or shapefile."
            ) from exc
        if layer not in names:
            raise InputError(f"{place}: the file has no layer '{layer}'; its layers are {names}. Choose one of them.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "more than one layer found": the first is used
            gdf = _read_in_chunks(p, layer, fid_as_index)
    except Exception as exc:  # pyogrio raises driver-specific errors
        raise InputError(
            f"{place}: cannot be read as a vector layer ({exc}). Use a GeoPackage, GeoJSON or shapefile."
        ) from exc
    if not isinstance(gdf, gpd.GeoDataFrame) or "geometry" not in gdf:
        raise InputError(f"{place}: the layer has no geometry column. Choose a layer with geometries.")
    if len(gdf) == 0:
        raise InputError(f"{place}: the layer has no features. Choose a layer that holds some.")
    return gdf


#: Features per pyogrio read of :func:`read_layer` (for drivers that seek to a feature quickly).
READ_CHUNK = 50_000


def _read_in_chunks(path: Path, layer: str | None, fid_as_index: bool) -> gpd.GeoDataFrame:
    """The whole layer, read ``READ_CHUNK`` features at a time where the driver seeks quickly, in one read
    otherwise: a GeoPackage by ranges of its feature ids (the table's primary key), another driver that seeks
    to a feature quickly (shapefile, GeoJSON, FlatGeobuf) by feature offsets.

    One pyogrio read of millions of features holds the GIL for seconds (the OGR loop and the conversion of
    the columns), so a caller's progress heartbeat (another thread, :meth:`Progress.wait`) could not report
    meanwhile; between two chunks it can. (A GeoPackage is not read by offsets: SQLite walks the skipped rows,
    so the reads would grow quadratically.)
    """
    import pyogrio

    info = pyogrio.read_info(path, layer=layer)
    n = int(info.get("features", -1))

    def read(**kwargs: Any) -> gpd.GeoDataFrame:
        return gpd.read_file(path, layer=layer, engine="pyogrio", fid_as_index=fid_as_index, **kwargs)

    if n <= READ_CHUNK:
        return read()
    fid = info.get("fid_column")
    if info.get("driver") == "GPKG" and fid:
        def fid_at(position: int) -> int:  # the feature ids ascend with the rows (the table's rowid)
            one = pyogrio.read_dataframe(path, layer=layer, columns=[], read_geometry=False, fid_as_index=True,
                                         skip_features=position, max_features=1)
            return int(one.index[0])

        first, last = fid_at(0), fid_at(n - 1)
        name = '"' + str(fid).replace('"', '""') + '"'
        parts = [read(where=f"{name} >= {lo} AND {name} < {lo + READ_CHUNK}")
                 for lo in range(first, last + 1, READ_CHUNK)]
    elif info.get("capabilities", {}).get("fast_set_next_by_index"):
        parts = [read(skip_features=start, max_features=READ_CHUNK) for start in range(0, n, READ_CHUNK)]
    else:
        return read()
    return pd.concat(parts, ignore_index=not fid_as_index)


def require_crs(gdf: gpd.GeoDataFrame, place: str) -> None:
    """Raise if a layer has no CRS.

    Raises:
        InputError: If ``gdf.crs`` is ``None``.
    """
    if gdf.crs is None:
        raise InputError(
            f"{place} has no coordinate reference system (CRS). Assign one in QGIS (Layer Properties > "
            "Source > Assigned Coordinate Reference System) and export the layer again."
        )


def attribute_fields(gdf: pd.DataFrame) -> list[str]:
    """The attribute (non-geometry) column names of a layer."""
    geom = gdf.geometry.name if isinstance(gdf, gpd.GeoDataFrame) else None
    return [str(c) for c in gdf.columns if c != geom]


def numeric_fields(gdf: pd.DataFrame) -> list[str]:
    """Attribute fields holding numbers (booleans excluded)."""
    return [
        c
        for c in attribute_fields(gdf)
        if pd.api.types.is_numeric_dtype(gdf[c]) and not pd.api.types.is_bool_dtype(gdf[c])
    ]


def require_field(gdf: pd.DataFrame, field: str, place: str, role: str) -> None:
    """Raise if ``field`` is not a column of ``gdf``, listing the fields it has.

    Args:
        gdf: The layer.
        field: The field name the configuration asks for.
        place: The layer's name in messages.
        role: What the field is for, e.g. ``"id field"``.

    Raises:
        InputError: If the field is missing.
    """
    if field not in gdf.columns or (isinstance(gdf, gpd.GeoDataFrame) and field == gdf.geometry.name):
        raise InputError(
            f"{place}: the {role} '{field}' does not exist. Available fields: {attribute_fields(gdf)}. "
            "Choose one of them (names are case-sensitive)."
        )


def _one_to_str(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    text = str(value).strip()
    return text or None


#: Values per conversion of :func:`values_to_str` and :func:`str_series`.
STR_CHUNK = 250_000


def values_to_str(values: pd.Series) -> pd.Series:
    """Field values as stripped strings, integers without a decimal part (``12.0`` -> ``'12'``).

    Nulls, NaN and empty strings become ``None`` (object dtype), so ``isna()`` finds them. Converted
    ``STR_CHUNK`` values at a time: the conversion of millions of values is C code holding the GIL for
    seconds (a caller's progress heartbeat could not report meanwhile); between two chunks it can.
    """
    if len(values) <= STR_CHUNK:
        return _values_to_str_chunk(values)
    return pd.concat([_values_to_str_chunk(values.iloc[lo:lo + STR_CHUNK]) for lo in range(0, len(values), STR_CHUNK)])


def _values_to_str_chunk(values: pd.Series) -> pd.Series:
    if pd.api.types.is_string_dtype(values) and not pd.api.types.is_object_dtype(values):
        text = values.str.strip()
        out = text.to_numpy(dtype=object)
        out[(text.isna() | (text == "")).to_numpy(dtype=bool)] = None
        return pd.Series(out, index=values.index, dtype=object)
    if pd.api.types.is_integer_dtype(values) and not values.isna().any():
        return pd.Series(values.astype("int64").astype(str).to_numpy(dtype=object), index=values.index, dtype=object)
    return pd.Series([_one_to_str(v) for v in values.to_numpy(dtype=object)], index=values.index, dtype=object)


def str_series(values: np.ndarray, index: pd.Index | None = None) -> pd.Series:
    """``pd.Series(values, dtype="str")``, converted ``STR_CHUNK`` values at a time (as :func:`values_to_str`)."""
    parts = [pd.Series(values[lo:lo + STR_CHUNK], dtype="str") for lo in range(0, len(values), STR_CHUNK)]
    out = pd.concat(parts, ignore_index=True) if parts else pd.Series(values, dtype="str")
    if index is not None:
        out.index = index
    return out


def type_summary(types: Iterable[str]) -> str:
    """``"Point (12), LineString (3)"`` from a sequence of geometry type names."""
    counts = pd.Series(list(types), dtype=object).value_counts()
    return ", ".join(f"{name} ({n:,})" for name, n in counts.items())


def polygonal_part(geom: BaseGeometry | None) -> BaseGeometry | None:
    """The polygonal part of a geometry (``None`` if it has none): polygons of a collection, merged."""
    if geom is None or geom.is_empty:
        return None
    if geom.geom_type in POLYGONAL:
        return geom
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in POLYGONAL and not g.is_empty]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    merged = shapely.union_all(parts)
    return merged if merged.geom_type in POLYGONAL else polygonal_part(merged)


def repair_polygons(geoms: gpd.GeoSeries) -> tuple[gpd.GeoSeries, int]:
    """Make invalid polygons valid with :func:`shapely.make_valid`, keeping only their polygonal parts.

    Args:
        geoms: Polygon geometries (nulls allowed, left as they are).

    Returns:
        The repaired geometries (``None`` where nothing polygonal is left) and how many were invalid.
    """
    values = geoms.to_numpy(dtype=object).copy()
    present = ~pd.isna(values)
    invalid = np.zeros(len(values), dtype=bool)
    invalid[present] = ~shapely.is_valid(values[present].astype(object))
    for i in np.flatnonzero(invalid):
        values[i] = polygonal_part(shapely.make_valid(values[i]))
    return gpd.GeoSeries(values, index=geoms.index, crs=geoms.crs), int(invalid.sum())


def single_points(gdf: gpd.GeoDataFrame, place: str, report: list[str]) -> gpd.GeoDataFrame:
    """Keep point features: multi-points become their centroid, null geometries are dropped (both reported).

    Raises:
        InputError: If the layer holds lines or polygons, or no feature has a geometry.
    """
    # integer type ids, not ``geom_type``: a Series of millions of type names holds the GIL for seconds
    geoms = gdf.geometry.to_numpy()
    type_id = shapely.get_type_id(geoms)
    nulls = (type_id < 0) | shapely.is_empty(geoms)
    if nulls.all():
        raise InputError(f"{place}: no feature has a geometry. Choose a point layer.")
    bad = ~nulls & ~np.isin(type_id, POINT_TYPE_IDS)
    if bad.any():
        raise InputError(
            f"{place}: expected points, found {type_summary(gdf.geometry[bad].geom_type)}. "
            "Convert the layer to points first (QGIS: Vector > Geometry Tools > Centroids) or choose a point layer."
        )
    out = gdf.loc[~nulls].copy()
    if nulls.any():
        report.append(f"{place}: {int(nulls.sum()):,} features without a geometry were ignored.")
    multi = type_id[~nulls] == shapely.GeometryType.MULTIPOINT
    if multi.any():
        out.loc[multi, out.geometry.name] = out.geometry[multi].centroid
        report.append(f"{place}: {int(multi.sum()):,} multi-point features were replaced by their centroid.")
    return out


#: Points per spatial-index query of :func:`assign_points`.
ASSIGN_CHUNK = 200_000


def assign_points(points: gpd.GeoSeries, regions: gpd.GeoDataFrame) -> pd.Series:
    """The region each point lies in (one region per point), or NaN for points outside every region.

    A point inside a polygon gets that region; a point on a shared boundary gets the first region (in
    region order) it touches.

    Args:
        points: Point geometries in the CRS of ``regions``.
        regions: Region polygons indexed by ``region_id``.

    Returns:
        Region ids (object dtype, NaN outside) indexed like ``points``.
    """
    geoms = points.to_numpy(dtype=object)
    tree = regions.sindex
    hit = np.full(len(geoms), -1, dtype=np.int64)
    for predicate in ("within", "intersects"):
        todo = np.flatnonzero(hit < 0)
        # in chunks: one query over 10 M points holds the GIL for a long time, so a caller's progress
        # heartbeat (another thread, Progress.wait) could not run meanwhile
        for lo in range(0, len(todo), ASSIGN_CHUNK):
            part = todo[lo:lo + ASSIGN_CHUNK]
            pts_i, reg_i = tree.query(geoms[part], predicate=predicate)
            if not len(pts_i):
                continue
            order = np.lexsort((reg_i, pts_i))  # first region (input order) per point
            pts_i, reg_i = pts_i[order], reg_i[order]
            first = np.unique(pts_i, return_index=True)[1]
            hit[part[pts_i[first]]] = reg_i[first]
    ids = regions.index.to_numpy(dtype=object)
    out = np.full(len(geoms), np.nan, dtype=object)
    out[hit >= 0] = ids[hit[hit >= 0]]
    return pd.Series(out, index=points.index, dtype=object, name="region_id")


def first_ids(ids: Iterable[object], limit: int = 5) -> str:
    """``"'a', 'b', 'c' and 4 more"`` for messages."""
    ids = list(ids)
    shown = ", ".join(repr(str(i)) for i in ids[:limit])
    return shown if len(ids) <= limit else f"{shown} and {len(ids) - limit:,} more"
