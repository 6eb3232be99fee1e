"""The dependency-free module the plugin shares with the backend (``regionlens_common.py``, plugin root).

Installed, the plugin is the package ``regionlens`` and the module is ``regionlens.regionlens_common``;
in the tests ``plugin`` is a top-level package and the repository root is on ``sys.path``.
"""

from __future__ import annotations

try:
    from .. import regionlens_common as common  # installed: regionlens/regionlens_common.py
except ImportError:  # tests and scripts: plugin/ is top level, the repository root is on sys.path
    import regionlens_common as common  # type: ignore[no-redef]

__all__ = ["common", "gpkg_uri"]


def gpkg_uri(gpkg: object, layer: str) -> str:
    """OGR URI of one layer of a GeoPackage: ``<gpkg>|layername=<layer>``."""
    return f"{gpkg}|layername={layer}"
