"""The dependency-free module the plugin shares with the backend (``regionlens_common.py``, plugin root).

Installed, the plugin is the package ``regionlens`` and the module is ``regionlens.regionlens_common``;
in the tests ``plugin`` is a top-level package and the repository root is on ``sys.path``.
"""

from __future__ import annotations

try:
    from .. import regionlens_common as common  # installed: regionlens/regionlens_common.py
except ImportError:  # tests and scripts: plugin/ is top level, the repository root is on sys.path
    import regionlens_common as common  # type: ignore[no-redef]

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qgis.core import QgsMapLayer

__all__ = ["common", "gpkg_source", "gpkg_uri"]


def gpkg_uri(gpkg: object, layer: str) -> str:
    """OGR URI of one layer of a GeoPackage: ``<gpkg>|layername=<layer>``."""
    return f"{gpkg}|layername={layer}"


def gpkg_source(layer: QgsMapLayer) -> tuple[Path | None, str]:
    """``(GeoPackage file, layer name)`` of a layer read from a GeoPackage file (the layer name ``""`` when its
    source names none), else ``(None, "")``: the inverse of :func:`gpkg_uri`."""
    if layer.providerType() != "ogr":
        return None, ""
    parts = layer.source().split("|")
    path = Path(parts[0])
    if path.suffix.lower() != ".gpkg" or not path.is_file():
        return None, ""
    names = [p.split("=", 1)[1] for p in parts[1:] if p.startswith("layername=")]
    return path.resolve(), names[0] if names else ""
