"""POI files that are not a ready-made point layer: OpenStreetMap extracts and (Overture) GeoParquet.

Both readers return a frame with the columns ``category``, ``name`` and a geometry in the file's own CRS,
already clipped to the regions' extent, which :func:`backend.io.vectors.read_pois` then treats like any
other point layer (reprojection, assignment to regions, reports).

* **OpenStreetMap** (``.osm.pbf``, ``.osm``): GDAL's OSM driver through pyogrio, the reader the backend
  already uses for every vector layer (no extra dependency). The driver parses the file as a stream; its
  node cache goes to a temporary file on disk beyond 100 MB, so a country extract does not have to fit in
  memory, and only the features inside the regions' bounding box that carry one of the wanted tags are
  kept (a spatial filter plus an attribute filter evaluated while reading). A small ``osmconf.ini``
  written per read exposes exactly the wanted tag keys as fields and makes closed ways with those keys
  polygons. Nodes are POIs as they are; polygons (closed ways and multipolygon relations) become their
  centroid, computed in the run's metric CRS.
* **GeoParquet** (``.parquet``, ``.geoparquet``): pyarrow, batch by batch (only the geometry, category and
  name columns are read), keeping the rows inside the regions' bounding box. Overture Maps places are
  recognised by their ``categories`` and ``names`` struct columns: the category is ``categories.primary``
  and the name ``names.primary``. Any other GeoParquet point layer names its category column (a dotted
  path reads a field of a struct column).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS

from backend.errors import InputError
from regionlens_common import poi_file_kind

__all__ = [
    "OSM_TAGS",
    "OVERTURE_CATEGORY",
    "OVERTURE_NAME",
    "is_osm_file",
    "is_parquet_file",
    "poi_file_kind",
    "osm_category",
    "parse_osm_tags",
    "read_osm_pois",
    "read_parquet_pois",
]

#: The OSM tags that make a feature a POI, in priority order: a feature's category is ``key=value`` of the
#: first entry it matches (a shop in a railway station is ``railway=station`` only if it has no amenity,
#: shop, ... tag). ``key`` matches any value, ``key=value`` that value only.
OSM_TAGS: tuple[str, ...] = (
    "amenity", "shop", "leisure", "tourism", "office", "healthcare", "craft", "public_transport",
    "railway=station", "historic", "sport",
)
#: Overture Maps places: the category and name fields (struct column . field).
OVERTURE_CATEGORY = "categories.primary"
OVERTURE_NAME = "names.primary"

#: Keys GDAL's default osmconf.ini makes polygons of when a way is closed (kept, then ours added).
_POLYGON_KEYS = ("aeroway", "amenity", "boundary", "building", "craft", "geological", "historic", "landuse",
                 "leisure", "military", "natural", "office", "place", "shop", "sport", "tourism")
_BATCH_ROWS = 65_536


def is_osm_file(path: str | Path) -> bool:
    """Whether ``path`` is read as an OpenStreetMap extract."""
    return poi_file_kind(path) == "osm"


def is_parquet_file(path: str | Path) -> bool:
    """Whether ``path`` is read as GeoParquet."""
    return poi_file_kind(path) == "parquet"


def parse_osm_tags(tags: Sequence[str] | None, where: str = "pois.osm_tags") -> list[tuple[str, str | None]]:
    """``["amenity", "railway=station"]`` -> ``[("amenity", None), ("railway", "station")]``.

    Raises:
        InputError: If an entry is empty, has an empty key or value, or a character OSM keys do not use
            in a way that would break the reader's filter (quotes).
    """
    from backend.errors import ConfigError

    entries = list(OSM_TAGS if tags is None else tags)
    if not entries:
        raise ConfigError(f"'{where}' is empty; leave it out for the default tags {list(OSM_TAGS)}.")
    out: list[tuple[str, str | None]] = []
    for entry in entries:
        key, sep, value = str(entry).partition("=")
        key, value = key.strip(), value.strip()
        if not key or (sep and not value) or any(c in entry for c in "\"'\n,"):
            raise ConfigError(
                f"'{where}': {entry!r} is not an OSM tag filter; write a key (\"amenity\") or key=value "
                "(\"railway=station\")."
            )
        out.append((key, value if sep else None))
    return out


def osm_category(tags: dict[str, str | None], filters: Sequence[tuple[str, str | None]]) -> str | None:
    """The category of a feature with ``tags``: ``key=value`` of the first filter it matches, else None."""
    for key, wanted in filters:
        value = tags.get(key)
        value = value.strip() if isinstance(value, str) else ""
        if not value:
            continue
        if wanted is None or value == wanted:
            return f"{key}={value}"
    return None


def _osmconf(keys: list[str], folder: Path) -> Path:
    """An osmconf.ini exposing ``name`` and ``keys`` as fields of points and multipolygons."""
    attributes = ",".join(dict.fromkeys(["name", *keys]))
    polygons = ",".join(dict.fromkeys([*_POLYGON_KEYS, *keys]))
    common = "osm_id=yes\nosm_version=no\nosm_timestamp=no\nosm_uid=no\nosm_user=no\nosm_changeset=no\n"
    text = f"[general]\nclosed_ways_are_polygons={polygons}\n"
    for layer in ("points", "lines", "multipolygons", "multilinestrings", "other_relations"):
        fields = attributes if layer in ("points", "multipolygons") else "name"
        text += f"[{layer}]\n{common}attributes={fields}\nother_tags=no\nall_tags=no\n"
    path = folder / "osmconf.ini"
    path.write_text(text, encoding="utf-8")
    return path


def read_osm_pois(path: str | Path, tags: Sequence[str] | None, bbox_4326: tuple[float, float, float, float],
                  crs: CRS, place: str, report: list[str]) -> gpd.GeoDataFrame:
    """Read the POIs of an OpenStreetMap extract inside ``bbox_4326``.

    Args:
        path: The ``.osm.pbf`` (or ``.osm``) file.
        tags: Tag filters in priority order (see :data:`OSM_TAGS`); ``None`` = the default list.
        bbox_4326: ``(west, south, east, north)`` in degrees: the regions' extent.
        crs: The run's metric CRS (polygon centroids are computed in it).
        place: How messages name the file.
        report: Receives a line on the features read.

    Returns:
        Points in ``crs`` with columns ``category`` (``key=value``) and ``name``, index ``feature_id``
        (``n<id>`` nodes, ``w<id>`` closed ways, ``r<id>`` relations: traceable to OpenStreetMap).

    Raises:
        InputError: If the file is missing, is not a readable OSM file (truncated, another format), or holds
            no feature with one of the tags inside the regions' extent.
    """
    import pyogrio

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{place}: file not found. Check the path of the OpenStreetMap extract.")
    filters = parse_osm_tags(tags)
    keys = list(dict.fromkeys(key for key, _ in filters))
    condition = " OR ".join(f'"{key}" IS NOT NULL' for key in keys)
    frames = []
    with tempfile.TemporaryDirectory(prefix="regionlens_osm_") as tmp:
        conf = _osmconf(keys, Path(tmp))
        for layer, ids in (("points", ["osm_id"]), ("multipolygons", ["osm_id", "osm_way_id"])):
            try:
                gdf = pyogrio.read_dataframe(
                    p, layer=layer, columns=list(dict.fromkeys([*ids, "name", *keys])), bbox=bbox_4326, where=condition,
                    CONFIG_FILE=str(conf),  # a dataset open option of the OSM driver
                )
            except Exception as exc:  # pyogrio / GDAL raise driver-specific errors on a broken file
                raise InputError(
                    f"{place}: cannot be read as an OpenStreetMap extract ({exc}). The file is probably "
                    "incomplete (an interrupted download) or not an .osm.pbf file; download it again."
                ) from exc
            gdf["_fid"] = _feature_ids(gdf, layer)
            frames.append(gdf.drop(columns=[c for c in ("osm_id", "osm_way_id") if c in gdf.columns]))
    gdf = pd.concat(frames, ignore_index=True)
    gdf = gpd.GeoDataFrame(gdf, geometry="geometry", crs="EPSG:4326")
    categories = [osm_category(row, filters) for row in gdf[keys].to_dict("records")]
    gdf["category"] = pd.Series(categories, index=gdf.index, dtype=object)
    gdf = gdf.loc[gdf["category"].notna() & gdf.geometry.notna()]
    if gdf.empty:
        raise InputError(
            f"{place}: no node or area inside the regions' extent carries one of the tags "
            f"{[k if v is None else f'{k}={v}' for k, v in filters]}. Check that the extract covers the "
            "regions (open it in QGIS), or widen [pois] osm_tags."
        )
    gdf = gdf.to_crs(crs)
    areas = ~gdf.geometry.geom_type.isin(("Point", "MultiPoint"))
    if areas.any():
        gdf.loc[areas, "geometry"] = gdf.geometry[areas].centroid
    report.append(f"{place}: {int((~areas).sum()):,} tagged nodes and {int(areas.sum()):,} tagged areas "
                  "(as their centroids) read inside the regions' extent.")
    out = gpd.GeoDataFrame({"category": gdf["category"].to_numpy(dtype=object),
                            "name": [v if isinstance(v, str) and v.strip() else None for v in gdf["name"]]},
                           geometry=gdf.geometry.to_numpy(), crs=crs)
    fids = pd.Index(gdf["_fid"].to_numpy(dtype=object), name="feature_id")
    out.index = fids if fids.is_unique else pd.RangeIndex(len(out), name="feature_id")
    return out


def _feature_ids(gdf: pd.DataFrame, layer: str) -> np.ndarray:
    """``n<id>`` for nodes, ``w<id>`` for closed ways, ``r<id>`` for multipolygon relations."""
    if layer == "points":
        return np.array([f"n{v}" for v in gdf["osm_id"]], dtype=object)
    return np.array([f"r{r}" if isinstance(r, str) and r.strip() else f"w{w}"
                     for r, w in zip(gdf["osm_id"], gdf["osm_way_id"], strict=True)], dtype=object)


# ----------------------------------------------------------------------------------------------- GeoParquet
def _geo_metadata(schema: object, place: str) -> tuple[str, CRS]:
    """The primary geometry column and its CRS from a GeoParquet file's ``geo`` metadata."""
    meta = (getattr(schema, "metadata", None) or {}).get(b"geo")
    if meta is None:
        raise InputError(f"{place}: the Parquet file has no GeoParquet metadata (no geometry column). Save the "
                         "layer as GeoParquet (QGIS: Export > Save Features As > (Geo)Parquet), or use a GeoPackage.")
    geo = json.loads(meta)
    column = geo.get("primary_column", "geometry")
    info = geo.get("columns", {}).get(column, {})
    encoding = str(info.get("encoding", "WKB")).upper()
    if encoding != "WKB":
        raise InputError(f"{place}: the geometry column '{column}' is stored as {encoding}, not WKB. Write the file "
                         "with WKB geometries (the GeoParquet default), or convert it to a GeoPackage.")
    crs_info = info.get("crs", "OGC:CRS84")  # GeoParquet: a missing crs means OGC:CRS84
    crs = CRS.from_user_input(crs_info if crs_info is not None else "OGC:CRS84")
    return column, crs


def _column(table: object, dotted: str) -> np.ndarray:
    """The values of column ``dotted`` (``a.b`` = field ``b`` of struct column ``a``) as an object array."""
    import pyarrow.compute as pc

    top, *rest = dotted.split(".")
    col = table.column(top)  # type: ignore[attr-defined]
    for part in rest:
        col = pc.struct_field(col, part)
    return np.asarray(col.to_pylist(), dtype=object)


def _has_path(schema: object, dotted: str) -> bool:
    import pyarrow as pa

    top, *rest = dotted.split(".")
    if top not in schema.names:  # type: ignore[attr-defined]
        return False
    typ = schema.field(top).type  # type: ignore[attr-defined]
    for part in rest:
        if not pa.types.is_struct(typ) or typ.get_field_index(part) < 0:
            return False
        typ = typ.field(part).type
    return True


def read_parquet_pois(path: str | Path, category_field: str | None, name_field: str | None,
                      bounds: tuple[float, float, float, float], bounds_crs: CRS, place: str,
                      report: list[str]) -> tuple[gpd.GeoDataFrame, str, str | None]:
    """Read the points of a GeoParquet file inside ``bounds`` (Overture places or any point layer).

    Args:
        path: The ``.parquet`` file.
        category_field: Column holding the category (``a.b`` reads field ``b`` of struct column ``a``);
            ``None``: Overture's ``categories.primary``.
        name_field: Column holding the name; ``None``: Overture's ``names.primary`` when present.
        bounds: The regions' extent in ``bounds_crs``; rows outside it are not kept.
        bounds_crs: CRS of ``bounds``.
        place: How messages name the file.
        report: Receives a line on the rows read.

    Returns:
        ``(frame, category_column, name_column)``: a frame in the file's CRS with ``category`` and (when
        there is a name) ``name`` columns, and the column names to read them from.

    Raises:
        InputError: If the file is missing or not GeoParquet, lacks the category (or name) column, or has
            no row inside the regions' extent.
    """
    import pyarrow.parquet as pq
    from pyproj import Transformer

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{place}: file not found. Check the path of the GeoParquet file.")
    try:
        pf = pq.ParquetFile(p)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError on a broken or foreign file
        raise InputError(f"{place}: cannot be read as GeoParquet ({exc}). Download or export it again.") from exc
    schema = pf.schema_arrow
    geom_col, crs = _geo_metadata(schema, place)
    fields = [str(n) for n in schema.names]
    category = category_field or OVERTURE_CATEGORY
    if not _has_path(schema, category):
        hint = (f"It is not an Overture places file (no '{OVERTURE_CATEGORY}'): set [pois] category_field to the "
                "column holding the categories" if category_field is None else "Choose one of its columns")
        raise InputError(f"{place}: has no category column '{category}' (columns: {fields}). {hint}.")
    name = name_field or (OVERTURE_NAME if category_field is None and _has_path(schema, OVERTURE_NAME) else None)
    if name is not None and not _has_path(schema, name):
        raise InputError(f"{place}: has no name column '{name}' (columns: {fields}). Choose one of its columns.")
    box = shapely.box(*Transformer.from_crs(bounds_crs, crs, always_xy=True).transform_bounds(*bounds))
    columns = list(dict.fromkeys([geom_col, category.split(".")[0], *([name.split(".")[0]] if name else [])]))
    geoms, cats, names, total = [], [], [], 0
    try:
        for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=columns):
            total += batch.num_rows
            g = shapely.from_wkb(np.asarray(batch.column(geom_col).to_pylist(), dtype=object))
            keep = shapely.intersects(g, box)
            if not keep.any():
                continue
            geoms.append(g[keep])
            cats.append(_column(batch, category)[keep])
            names.append(_column(batch, name)[keep] if name else np.full(int(keep.sum()), None, dtype=object))
    except Exception as exc:  # a damaged row group
        raise InputError(f"{place}: cannot be read as GeoParquet ({exc}). Download or export it again.") from exc
    if not geoms:
        raise InputError(f"{place}: none of its {total:,} features lies inside the regions' extent. Check that the "
                         "file covers the regions (open it in QGIS), or choose another file.")
    frame = gpd.GeoDataFrame({"category": np.concatenate(cats), "name": np.concatenate(names)},
                             geometry=np.concatenate(geoms), crs=crs)
    frame.index = pd.RangeIndex(len(frame), name="feature_id")
    report.append(f"{place}: {len(frame):,} of {total:,} features lie inside the regions' extent "
                  f"(category '{category}'{f', name {name!r}' if name else ''}).")
    return frame, "category", "name" if name else None
