"""POI files and raster kinds: the request entries the run dock and the Processing algorithm both build.

A planner may give the POIs as a file rather than a layer, an OpenStreetMap extract (``.osm.pbf``) or
GeoParquet (Overture places, or any point layer), which the backend reads directly (clipped to the regions,
never loaded whole: docs/sources.md); and may declare a raster a satellite-embedding raster (AlphaEarth,
TESSERA), suggested for rasters with :data:`EMBEDDING_MIN_BANDS` bands or more. Suffixes, kinds and the
band threshold come from ``regionlens_common`` (the names the backend uses).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import common

__all__ = [
    "EMBEDDING_MIN_BANDS",
    "POI_FILE_FILTER",
    "RASTER_KINDS",
    "poi_file_config",
    "poi_file_kind",
    "poi_file_problem",
    "raster_config",
    "suggested_raster_kind",
]

EMBEDDING_MIN_BANDS: int = common.EMBEDDING_MIN_BANDS
RASTER_KINDS: tuple[str, ...] = tuple(common.RASTER_KINDS)
poi_file_kind = common.poi_file_kind
suggested_raster_kind = common.suggested_raster_kind

_KIND_WORDS = {"osm": "OpenStreetMap extract", "parquet": "GeoParquet (Overture places or a point layer)"}
#: File-dialog filter of the POI files the backend reads (``;;``-separated, as Qt and QgsFileWidget take it).
POI_FILE_FILTER = ";;".join(
    f"{_KIND_WORDS[kind]} ({' '.join('*' + s for s in suffixes)})"
    for kind, suffixes in common.POI_FILE_SUFFIXES.items()
)


def poi_file_problem(path: str) -> str | None:
    """Why ``path`` cannot be the POI file, or ``None``."""
    if not path:
        return None
    if poi_file_kind(path) is None:
        endings = ", ".join(s for suffixes in common.POI_FILE_SUFFIXES.values() for s in suffixes)
        return (f"The POI file '{Path(path).name}' is neither an OpenStreetMap extract nor GeoParquet (its name must "
                f"end in {endings}); to use another file, add it to the project and choose it as the POI layer.")
    if not Path(path).expanduser().is_file():
        return f"The POI file '{path}' does not exist."
    return None


def poi_file_config(path: str, category_field: str = "", name_field: str = "") -> dict[str, Any]:
    """The ``[pois]`` entry of a POI file: an OpenStreetMap extract takes only its path (categories come from its
    tags); GeoParquet its category and name columns when given (default: Overture's)."""
    entry: dict[str, Any] = {"path": str(Path(path).expanduser().resolve())}
    if poi_file_kind(path) == "parquet":
        if category_field:
            entry["category_field"] = category_field
        if name_field:
            entry["name_field"] = name_field
    return entry


def raster_config(entry: dict[str, Any], kind: str) -> dict[str, Any]:
    """A ``[[rasters]]`` entry (``{"path", ...}``) with its kind: ``kind = "embedding"`` added for an embedding."""
    if kind not in RASTER_KINDS:
        raise ValueError(f"Unknown raster kind {kind!r}; use one of {list(RASTER_KINDS)}.")
    return {**entry, "kind": kind} if kind != RASTER_KINDS[0] else dict(entry)
