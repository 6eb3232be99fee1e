"""Translation of the plugin's texts: :func:`tr` in the ``RegionLens`` context (no other plugin import)."""

from __future__ import annotations

from qgis.PyQt.QtCore import QCoreApplication

__all__ = ["CONTEXT", "tr"]

#: The translation context of every RegionLens text.
CONTEXT = "RegionLens"


def tr(text: str) -> str:
    """Translate ``text`` in the RegionLens context."""
    return QCoreApplication.translate(CONTEXT, text)
