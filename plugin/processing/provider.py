"""The RegionLens Processing provider (id ``regionlens``)."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ._base import ICON_PATH
from .cluster import ClusterAlgorithm
from .embed import EmbedAlgorithm
from .predict import PredictAlgorithm

__all__ = ["PROVIDER_ID", "RegionLensProvider"]

PROVIDER_ID = "regionlens"


class RegionLensProvider(QgsProcessingProvider):
    """Provides ``regionlens:embed``, ``regionlens:cluster`` and ``regionlens:predict``."""

    def id(self) -> str:
        """Provider id, the prefix of the algorithm ids."""
        return PROVIDER_ID

    def name(self) -> str:
        """Name shown in the toolbox."""
        return "RegionLens"

    def longName(self) -> str:  # noqa: N802 - QGIS API
        """Longer name shown in tooltips."""
        return "RegionLens region embeddings"

    def icon(self) -> QIcon:
        """The RegionLens icon."""
        return QIcon(str(ICON_PATH))

    def svgIconPath(self) -> str:  # noqa: N802 - QGIS API
        """Path of the SVG icon (used by the modeler and qgis_process)."""
        return str(ICON_PATH)

    def loadAlgorithms(self) -> None:  # noqa: N802 - QGIS API
        """Add the three algorithms."""
        for algorithm in (EmbedAlgorithm(), ClusterAlgorithm(), PredictAlgorithm()):
            self.addAlgorithm(algorithm)
